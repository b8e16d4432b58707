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
    "tab.extras": ("Extras", "后期处理"),
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
    "generate.send_extras": ("Send to extras", "发送到后期处理"),
    # extras
    "extras.source": ("Picture to upscale", "要放大的图片"),
    "extras.upscaler": ("Upscaler", "放大算法"),
    "extras.scale": ("Scale by", "放大倍数"),
    "extras.run": ("Upscale", "放大"),
    "extras.result": ("Upscaled", "放大结果"),
    "extras.done": ("Saved, {width}x{height}", "已保存，{width}x{height}"),
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
    "library.cards": ("Characters and styles", "角色与画风"),
    "library.training": ("Training", "训练参数"),
    "library.scores": ("Best checkpoint: step {step}", "最佳检查点：第 {step} 步"),
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
    # data sets tab (ui/tabs/datasets.py)
    "tab.datasets": ("Data sets", "数据集"),
    "datasets.picker": ("Data set", "数据集"),
    "datasets.refresh": ("Refresh", "刷新"),
    "datasets.info": ("**{name}**: {images} images, {captioned} with a caption", "**{name}**：{images} 张图片，{captioned} 张有标注"),
    "datasets.none_chosen": ("No data set chosen: pick one above or import one first.", "未选择数据集：请在上方选择，或先导入一个。"),
    "datasets.delete": ("Delete this data set", "删除此数据集"),
    "datasets.confirm_delete": ("Type the data set's name to delete it", "输入数据集名称以确认删除"),
    "datasets.deleted": ("Deleted {name}", "已删除 {name}"),
    "datasets.import": ("Import", "导入"),
    "datasets.import_help": (
        "Upload images, a zip, or a folder's files with their caption .txt files (same name as the image).",
        "上传图片、zip 压缩包，或文件夹中的文件及其同名的标注 .txt 文件。",
    ),
    "datasets.files": ("Images, captions (.txt) or zip", "图片、标注 (.txt) 或 zip"),
    "datasets.folder": ("Or a whole folder", "或整个文件夹"),
    "datasets.new_name": ("New data set name", "新数据集名称"),
    "datasets.background": ("Background for transparency", "透明区域背景色"),
    "datasets.import_run": ("Import", "导入"),
    "datasets.imported": ("Imported {name}: {images} images ({failed} files refused)", "已导入 {name}：{images} 张图片（{failed} 个文件未导入）"),
    "datasets.filters": ("Filters", "筛选"),
    "datasets.clean.min_width": ("Minimum width", "最小宽度"),
    "datasets.clean.min_height": ("Minimum height", "最小高度"),
    "datasets.clean.min_ratio": ("Minimum aspect ratio (0: none)", "最小宽高比（0：不限）"),
    "datasets.clean.max_ratio": ("Maximum aspect ratio (0: none)", "最大宽高比（0：不限）"),
    "datasets.clean.dedupe": ("Duplicates", "去重"),
    "datasets.clean.phash_threshold": ("Near-duplicate distance", "近似重复阈值"),
    "datasets.clean.min_sharpness": ("Minimum sharpness (0: none)", "最低清晰度（0：不限）"),
    "datasets.clean_preview": ("Preview what would be dropped", "预览将被移除的图片"),
    "datasets.clean_apply": ("Apply filters", "应用筛选"),
    "datasets.clean_would_drop": ("Would drop {dropped} images, keep {kept}.", "将移除 {dropped} 张图片，保留 {kept} 张。"),
    "datasets.clean_dropped": ("Dropped {dropped} images, kept {kept}.", "已移除 {dropped} 张图片，保留 {kept} 张。"),
    "datasets.column.file": ("File", "文件"),
    "datasets.column.reason": ("Why", "原因"),
    "datasets.column.caption": ("Caption", "标注"),
    "datasets.column.original": ("Uploaded as", "原文件名"),
    "datasets.column.before": ("Before", "修改前"),
    "datasets.column.after": ("After", "修改后"),
    "datasets.captioning": ("Captioning", "自动标注"),
    "datasets.fixed_caption": ("Fixed caption or template (no model)", "固定标注或模板（无需模型）"),
    "datasets.template": ("Caption or template", "标注或模板"),
    "datasets.template_help": (
        "Fixed text, or a template with {trigger}, {caption} (the current caption) and {name} (the file name).",
        "固定文本，或使用 {trigger}、{caption}（当前标注）和 {name}（文件名）的模板。",
    ),
    "datasets.trigger": ("Trigger word", "触发词"),
    "datasets.only_missing": ("Only images without a caption", "仅处理无标注的图片"),
    "datasets.template_apply": ("Set captions", "写入标注"),
    "datasets.captions_set": ("Changed {changed} of {images} captions.", "已修改 {changed}/{images} 条标注。"),
    "datasets.model_caption": ("Tagger or captioner model", "打标或描述模型"),
    "datasets.labeller": ("Labeller", "标注方式"),
    "datasets.labeller.tagger": ("Tagger (WD14)", "打标器 (WD14)"),
    "datasets.labeller.captioner": ("Captioner (BLIP, Florence-2…)", "描述模型 (BLIP、Florence-2…)"),
    "datasets.label_model": ("Model", "模型"),
    "datasets.label_model_help": ("A folder name in models/ (no download).", "models/ 中的文件夹名（不会下载）。"),
    "datasets.label_model_missing": ("Model: give the tagger's or captioner's folder name in models/.", "模型：请填写 models/ 中打标器或描述模型的文件夹名。"),
    "datasets.label_mode": ("Existing captions", "已有标注的处理"),
    "datasets.threshold": ("Tag threshold", "标签阈值"),
    "datasets.label_start": ("Start captioning", "开始标注"),
    "datasets.label_cancel": ("Cancel", "取消"),
    "datasets.label_running": ("Image {step}/{total}", "第 {step}/{total} 张图片"),
    "datasets.label_done": ("Wrote {changed} captions in {seconds} s", "已写入 {changed} 条标注，用时 {seconds} 秒"),
    "datasets.editor": ("Caption editor", "标注编辑"),
    "datasets.search": ("Show captions containing", "只显示包含此内容的标注"),
    "datasets.images": ("Images (the first {count})", "图片（前 {count} 张）"),
    "datasets.captions_save": ("Save edited captions", "保存修改的标注"),
    "datasets.captions_saved": ("Saved {changed} captions.", "已保存 {changed} 条标注。"),
    "datasets.bulk": ("Bulk edit every caption", "批量编辑所有标注"),
    "datasets.bulk_add": ("Add tags (comma separated)", "添加标签（逗号分隔）"),
    "datasets.bulk_remove": ("Remove tags (comma separated)", "删除标签（逗号分隔）"),
    "datasets.bulk_replace": ("Replace tags", "替换标签"),
    "datasets.bulk_replace_help": ("OLD=NEW, one per line (NEW empty removes OLD).", "旧=新，每行一条（新为空则删除）。"),
    "datasets.bulk_preview": ("Preview changes", "预览修改"),
    "datasets.bulk_apply": ("Apply to all captions", "应用到所有标注"),
    "datasets.bulk_would_change": ("Would change {changed} captions.", "将修改 {changed} 条标注。"),
    "datasets.bulk_changed": ("Changed {changed} captions.", "已修改 {changed} 条标注。"),
    "datasets.report": ("Report", "报告"),
    "datasets.resolution": ("Training resolution", "训练分辨率"),
    "datasets.report_make": ("Make the report", "生成报告"),
    "datasets.report_file": ("Report file (HTML)", "报告文件 (HTML)"),
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
