"""Every label of the web UI in English and Simplified Chinese: one table, one lookup.

The source workflows are Chinese and so are many users; a label that is missing from the
table is a test failure (tests/test_ui_i18n.py), never an English word on a Chinese page.
Tooltips come from the config models' field descriptions (one source with CLI help and the
API docs), so they are not repeated here.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["LABELS", "Translator", "translator"]

# key -> (English, 简体中文)
LABELS: dict[str, tuple[str, str]] = {
    # tabs
    "tab.generate": ("Generate", "生成"),
    "tab.png_info": ("PNG info", "图片信息"),
    "tab.library": ("Library", "模型库"),
    "tab.jobs": ("Jobs", "任务"),
    "tab.settings": ("Settings", "设置"),
    # generate: prompts and model
    "generate.prompt": ("Prompt", "正向提示词"),
    "generate.negative_prompt": ("Negative prompt", "反向提示词"),
    "generate.model": ("Model", "模型"),
    "generate.vae": ("VAE", "VAE"),
    "generate.vae_automatic": ("Automatic", "自动"),
    "generate.sampler": ("Sampler", "采样器"),
    "generate.schedule": ("Schedule type", "调度类型"),
    "generate.schedule_automatic": ("Automatic", "自动"),
    "generate.steps": ("Sampling steps", "采样步数"),
    "generate.cfg_scale": ("CFG scale", "提示词相关性 (CFG)"),
    "generate.width": ("Width", "宽度"),
    "generate.height": ("Height", "高度"),
    "generate.seed": ("Seed", "随机种子"),
    "generate.random_seed": ("Random", "随机"),
    "generate.reuse_seed": ("Reuse last seed", "复用上次种子"),
    "generate.subseed": ("Variation seed", "变异种子"),
    "generate.subseed_strength": ("Variation strength", "变异强度"),
    "generate.batch_size": ("Batch size", "单批数量"),
    "generate.count": ("Batch count", "批次数"),
    "generate.clip_skip": ("Clip skip", "跳过 CLIP 层"),
    "generate.run": ("Generate", "生成"),
    "generate.interrupt": ("Interrupt", "中断"),
    "generate.skip": ("Skip", "跳过"),
    "generate.progress": ("Progress", "进度"),
    "generate.gallery": ("Images", "图片"),
    "generate.infotext": ("Generation parameters", "生成参数"),
    "generate.send_img2img": ("Send to img2img", "发送到图生图"),
    # generate: hires fix
    "generate.hires": ("Hires fix", "高清修复"),
    "generate.hires_scale": ("Upscale by", "放大倍数"),
    "generate.hires_steps": ("Hires steps", "高清修复步数"),
    "generate.hires_strength": ("Denoising strength", "重绘幅度"),
    "generate.hires_upscaler": ("Upscaler", "放大算法"),
    # generate: img2img
    "generate.img2img": ("img2img", "图生图"),
    "generate.init_image": ("Source image", "原图"),
    "generate.strength": ("Denoising strength", "重绘幅度"),
    "generate.resize_mode": ("Resize mode", "缩放模式"),
    "generate.clear_image": ("Clear (back to txt2img)", "清除（回到文生图）"),
    # generate: inpaint
    "generate.inpaint": ("Inpaint", "局部重绘"),
    "generate.inpaint_painter": ("Paint the part to repaint", "涂抹要重绘的区域"),
    "generate.mask_blur": ("Mask blur", "蒙版模糊"),
    "generate.inpainting_fill": ("Masked content", "蒙版区域内容"),
    "generate.inpaint_only_masked": ("Only masked (at full resolution)", "仅重绘蒙版区域（全分辨率）"),
    "generate.inpaint_padding": ("Only masked padding, pixels", "仅蒙版区域的边距（像素）"),
    "generate.send_inpaint": ("Send to inpaint", "发送到局部重绘"),
    # generate: story mode (a prompt list)
    "generate.story": ("Story (prompt list)", "故事模式（提示词列表）"),
    "generate.story_prompts": ("One prompt per line, or a YAML list", "每行一个提示词，或 YAML 列表"),
    "generate.story_seed_policy": ("Seeds across the prompts", "各提示词的种子"),
    "generate.story_run": ("Generate the series", "生成整组图片"),
    # generate: LoRA and embeddings
    "generate.networks": ("LoRA and embeddings", "LoRA 与嵌入"),
    "generate.lora": ("LoRA", "LoRA"),
    "generate.lora_weight": ("Weight", "权重"),
    "generate.add_lora": ("Add to prompt", "加入提示词"),
    "generate.embedding": ("Embedding", "嵌入"),
    "generate.add_embedding": ("Add to prompt", "加入提示词"),
    "generate.lora_card": ("About this LoRA", "LoRA 信息"),
    "generate.refresh": ("Refresh lists", "刷新列表"),
    # progress texts
    "progress.queued": ("Queued, position {position}", "排队中，第 {position} 位"),
    "progress.running": ("Step {step}/{steps}, {percent}% — ETA {eta}", "第 {step}/{steps} 步，{percent}% — 剩余 {eta}"),
    "progress.starting": ("Starting…", "正在启动…"),
    "progress.done": ("Done in {seconds} s", "完成，用时 {seconds} 秒"),
    "progress.cancelled": ("Interrupted", "已中断"),
    "progress.failed": ("Failed: {error}", "失败：{error}"),
    # png info
    "png.image": ("Image", "图片"),
    "png.parameters": ("Parameters", "参数"),
    "png.fields": ("Read fields", "解析结果"),
    "png.send_generate": ("Send to Generate", "发送到生成"),
    "png.no_parameters": ("This image carries no generation parameters.", "这张图片没有生成参数。"),
    # library
    "library.loras": ("LoRAs", "LoRA"),
    "library.models": ("Models", "模型"),
    "library.embeddings": ("Embeddings", "嵌入"),
    "library.search": ("Search", "搜索"),
    "library.name": ("Name", "名称"),
    "library.delete": ("Delete", "删除"),
    "library.confirm_delete": ("Type the name again to delete it", "再次输入名称以确认删除"),
    "library.upload": ("Import a file", "导入文件"),
    "library.new_name": ("New name", "新名称"),
    "library.rename": ("Rename", "重命名"),
    "library.renamed": ("Renamed {old} to {new}", "已将 {old} 重命名为 {new}"),
    "library.import": ("Import", "导入"),
    "library.refresh": ("Refresh", "刷新"),
    "library.deleted": ("Deleted {name}", "已删除 {name}"),
    "library.imported": ("Imported {name}", "已导入 {name}"),
    "library.column.name": ("Name", "名称"),
    "library.column.kind": ("Kind", "类型"),
    "library.column.base": ("Base model", "基础模型"),
    "library.column.trigger": ("Trigger words", "触发词"),
    "library.column.size": ("Size (MB)", "大小 (MB)"),
    "library.column.steps": ("Steps", "步数"),
    "library.column.error": ("Problem", "问题"),
    # jobs
    "jobs.table": ("Jobs", "任务列表"),
    "jobs.refresh": ("Refresh", "刷新"),
    "jobs.job_id": ("Job id", "任务 ID"),
    "jobs.cancel": ("Cancel job", "取消任务"),
    "jobs.cancelled": ("Cancelled {job}", "已取消 {job}"),
    "jobs.artifacts": ("Files of the job", "任务文件"),
    "jobs.column.id": ("Id", "ID"),
    "jobs.column.kind": ("Kind", "类型"),
    "jobs.column.state": ("State", "状态"),
    "jobs.column.user": ("Owner", "所有者"),
    "jobs.column.progress": ("Progress", "进度"),
    "jobs.column.created": ("Created", "创建时间"),
    "jobs.column.error": ("Error", "错误"),
    # settings
    "settings.language": ("UI language", "界面语言"),
    "settings.defaults": ("Generation defaults", "生成默认值"),
    "settings.save": ("Save settings", "保存设置"),
    "settings.saved": ("Saved. The page reloads in the chosen language.", "已保存，页面将以所选语言重新加载。"),
    # header
    "app.title": ("lorastudio", "lorastudio"),
    "app.subtitle": (
        "Train and use LoRAs for characters and styles",
        "训练并使用角色与画风 LoRA",
    ),
    "app.error": ("Error", "错误"),
}

Translator = Callable[..., str]


def translator(language: str) -> Translator:
    """`t("tab.generate")` -> the label in `language`; `t("progress.done", seconds=3)` fills it in.

    An unknown key raises KeyError at page build time, so a missing label fails the tests.
    """
    column = 1 if language == "zh" else 0

    def t(key: str, **values: object) -> str:
        text = LABELS[key][column]
        return text.format(**values) if values else text

    return t
