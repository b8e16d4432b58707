"""Every label of the web UI in English and Simplified Chinese: one table, one lookup.

The source workflows are Chinese and so are many users; a label that is missing from the
table is a test failure (tests/test_ui_parts.py), never an English word on a Chinese page.
Tooltips come from the config models' field descriptions (one English source with CLI help and
the API docs), so they are not repeated here; their Chinese texts are `ui/field_help.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from lorastudio.ui.i18n_errors import ERROR_LABELS
from lorastudio.ui.i18n_import import IMPORT_LABELS
from lorastudio.ui.i18n_train import TRAIN_LABELS

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
    "generate.pad_conds": ("Pad prompt/negative prompt", "补齐正/负提示词长度"),
    "generate.rng": ("Random number generator source", "随机数生成器来源"),
    "generate.ensd": ("Eta noise seed delta (ENSD)", "Eta 噪声种子偏移（ENSD）"),
    "generate.old_step_noise": ("lorastudio step noise before RNG (seed + 1)", "RNG 之前的 lorastudio 步进噪声（种子 + 1）"),
    "generate.old_unipc": ("lorastudio UniPC before A1111's (diffusers' defaults)", "A1111 方式之前的 lorastudio UniPC（diffusers 默认值）"),
    "generate.unipc": ("UniPC settings", "UniPC 设置"),
    "generate.unipc_order": ("UniPC order", "UniPC 阶数"),
    "generate.unipc_variant": ("UniPC variant", "UniPC 变体"),
    "generate.unipc_skip_type": ("UniPC skip type", "UniPC 步长间隔方式"),
    "generate.unipc_lower_order_final": ("UniPC lower order final", "UniPC 最后几步降阶"),
    "generate.compat": ("Older A1111 and lorastudio images", "旧版 A1111 / lorastudio 图片兼容"),
    "generate.pad_conds_v0": ("Pad conds v0 (A1111 before 1.6)", "旧式补齐负提示词（A1111 1.6 之前）"),
    "generate.old_prompt_editing": ("Old prompt editing timelines (before 1.6)", "旧式提示词编辑时间线（1.6 之前）"),
    "generate.eta": ("Eta (DDIM)", "Eta（DDIM）"),
    "generate.seed_resize_from_w": ("Resize seed from width", "种子来源宽度"),
    "generate.seed_resize_from_h": ("Resize seed from height", "种子来源高度"),
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
    "generate.hires_resize_x": ("Resize width to", "将宽度调整为"),
    "generate.hires_resize_y": ("Resize height to", "将高度调整为"),
    "generate.hires_steps": ("Hires steps", "高清修复步数"),
    "generate.hires_strength": ("Denoising strength", "重绘幅度"),
    "generate.hires_upscaler": ("Upscaler", "放大算法"),
    "generate.hires_sampler": ("Hires sampling method", "高清修复采样方法"),
    "generate.hires_schedule": ("Hires schedule type", "高清修复调度类型"),
    "generate.hires_same_sampler": ("Use same sampler", "使用相同采样器"),
    "generate.hires_same_schedule": ("Use same scheduler", "使用相同调度器"),
    "generate.hires_prompt": ("Hires prompt", "高清修复提示词"),
    "generate.hires_negative_prompt": ("Hires negative prompt", "高清修复反向提示词"),
    # generate: img2img
    "generate.img2img": ("img2img", "图生图"),
    "generate.init_image": ("Source image", "原图"),
    "generate.strength": ("Denoising strength", "重绘幅度"),
    "generate.resize_mode": ("Resize mode", "缩放模式"),
    "generate.initial_noise_multiplier": ("Noise multiplier", "噪声倍率"),
    "generate.extra_noise": ("Extra noise (img2img and hires fix)", "额外噪声（图生图与高清修复）"),
    "generate.clear_image": ("Clear (back to txt2img)", "清除（回到文生图）"),
    # generate: inpaint
    "generate.inpaint": ("Inpaint", "局部重绘"),
    "generate.inpaint_painter": ("Paint the part to repaint", "涂抹要重绘的区域"),
    "generate.mask_blur": ("Mask blur", "蒙版模糊"),
    "generate.inpainting_fill": ("Masked content", "蒙版区域内容"),
    "generate.mask_invert": ("Inpaint not masked", "重绘非蒙版区域"),
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
    "extras.no_source": ("Give a picture to upscale first.", "请先放入要放大的图片。"),
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
    "generate.styles": ("Styles", "风格"),
    "generate.apply_styles": ("Apply styles to prompts", "将风格写入提示词"),
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
    "png.model_kept": (
        "The image's model {named} is not in this workspace; generating with {model}.",
        "图片所用模型 {named} 不在工作区中，将使用 {model} 生成。",
    ),
    "png.lora_renamed": (
        "LoRA {old} is {new} in this workspace (same hash).",
        "LoRA {old} 在工作区中名为 {new}（哈希相同）。",
    ),
    "png.pictures_not_carried": (
        "The image was made from pictures its parameters do not carry ({pictures}): give them again (the"
        " init image, mask or ControlNet unit's image), or the picture will differ.",
        "该图片生成时使用了参数中未包含的图片（{pictures}）：请重新提供（初始图、蒙版或 ControlNet 单元的图片），否则结果会不同。",
    ),
    "png.noise_gpu_layout": (
        "The noise is NVIDIA's GPU numbers (RNG: GPU); they come back the same if the card that made the image"
        " ran {values} threads at once (SMs x threads per SM; an RTX 3090 runs 125952), else it laid the"
        " latent's values out otherwise and the picture will differ.",
        "噪声使用 NVIDIA GPU 的随机数（RNG: GPU）；若生成该图的显卡能同时运行 {values} 个线程（SM 数 × 每个 SM 的"
        "线程数；RTX 3090 为 125952），噪声可以完全复现，否则显卡对潜空间数值的排布不同，画面会不同。",
    ),
    "png.noise_old_sampler": (
        "lorastudio ran {sampler} otherwise when it made this image (before images wrote RNG); it now samples it"
        " as A1111 does, so the picture will differ.",
        "lorastudio 生成这张图片时（图片写入 RNG 之前）以另一种方式运行 {sampler}；现在与 A1111 的采样方式一致，"
        "因此画面会不同。",
    ),
    "png.weights_changed": (
        "{what} {name} has changed since the image was made (hash {old} → {new}); the picture will differ.",
        "{what} {name} 在图片生成后已更改（哈希 {old} → {new}），画面会不同。",
    ),
    "png.weights_found": (
        "{what} {name} has changed since the image was made (hash {old} → {new}); using {file}, which has the image's hash.",
        "{what} {name} 在图片生成后已更改（哈希 {old} → {new}）；改用哈希与图片相同的 {file}。",
    ),
    "png.device_changed": (
        "The image was made on {made}; generating on {here} here, so the pixels may differ (GPU and CPU arithmetic differ).",
        "图片在 {made} 上生成；此处使用 {here}，像素可能不同（GPU 与 CPU 的运算结果不同）。",
    ),
    "png.vae_missing": ("VAE {name} is not in this workspace; the model's own is used.", "工作区中没有 VAE {name}，将使用模型自带的 VAE。"),
    "png.sampler_unknown": ("Sampler {name} is not available here; the form's is kept.", "此处没有采样器 {name}，保留表单中的采样器。"),
    "png.schedule_unknown": (
        "Schedule type {name} is not available here; the sampler's own is used.",
        "此处没有调度类型 {name}，将使用采样器默认的调度。",
    ),
    "png.hires_sampler_unknown": (
        "Hires sampler {name} is not available here; the form's is kept.",
        "此处没有高清修复采样器 {name}，保留表单中的采样器。",
    ),
    "png.hires_upscaler_missing": (
        "Hires upscaler {name} is not installed; put it in models/upscalers, the form's is kept.",
        "未安装高清修复放大器 {name}（可放入 models/upscalers），保留表单中的放大器。",
    ),
    "png.controlnet_missing": (
        "ControlNet unit {unit}: {name} is not in studio/controlnet; the unit is left off.",
        "ControlNet 单元 {unit}：studio/controlnet 中没有 {name}，该单元保持关闭。",
    ),
    "png.control_module_unknown": (
        "ControlNet unit {unit}: preprocessor {name} is not available here; the unit is left off.",
        "ControlNet 单元 {unit}：此处没有预处理器 {name}，该单元保持关闭。",
    ),
    "png.grid_axis_unknown": (
        "X/Y/Z plot: {axis} type {name} is not available here; the axis is left off.",
        "X/Y/Z 图表：此处没有 {axis} 轴类型 {name}，该轴不使用。",
    ),
    # an HCP-Diffusion infer config read as a recipe (service.recipe_hcp)
    "png.hcp_not_mapped": (
        "HCP-Diffusion's {key} ({value}) has no equivalent here; it is left out.",
        "HCP-Diffusion 的 {key}（{value}）在此没有对应项，不使用。",
    ),
    "png.hcp_unresolved": (
        "{key}: {value} cannot be resolved here; it is left out.",
        "{key}：无法解析 {value}，不使用。",
    ),
    "png.hcp_base_missing": (
        "Its _base_ config {base} is not found; the values it holds are left out.",
        "找不到其 _base_ 配置 {base}，其中的值不使用。",
    ),
    "png.hcp_prompt_weights": (
        "HCP-Diffusion's {word} and {word:1.2} weights are written as A1111's (word) and (word:1.2).",
        "HCP-Diffusion 的 {word} 与 {word:1.2} 权重已改写为 A1111 的 (word) 与 (word:1.2)。",
    ),
    "png.hcp_sampler_default": (
        "The config names no scheduler (HCP-Diffusion used the model's own); generating with {sampler}.",
        "配置未指定调度器（HCP-Diffusion 使用模型自带的），将使用 {sampler} 生成。",
    ),
    "png.hcp_lora_missing": (
        "LoRA {file} is not in loras/ (looked for {names}); import it with `lorastudio lora import`.",
        "loras/ 中没有 LoRA {file}（查找了 {names}）；请用 `lorastudio lora import` 导入。",
    ),
    "png.hcp_trigger_missing": (
        "Trigger {word} has no embedding in embeddings/; copy {file} there, or it is read as plain text.",
        "触发词 {word} 在 embeddings/ 中没有对应的嵌入；请把 {file} 复制到该目录，否则按普通文字处理。",
    ),
    "png.hcp_alike": (
        "HCP-Diffusion samples through diffusers and weights prompts its own way; the picture will be alike, not the same.",
        "HCP-Diffusion 通过 diffusers 采样并以自己的方式加权提示词；画面会相近，但不完全相同。",
    ),
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
    "library.notes": ("Notes", "备注"),
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
    "library.column.size": ("Size", "大小"),
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
    **TRAIN_LABELS,  # the Data sets and Train tabs (ui/i18n_train.py)
    **ERROR_LABELS,  # the service's errors by their key, `err.<key>` (ui/i18n_errors.py)
    **IMPORT_LABELS,  # an import's refused files and notes by their key, `import.<key>` (ui/i18n_import.py)
    # generate: ControlNet units (ui/control_panel.py)
    "grid.title": ("X/Y/Z plot", "X/Y/Z 图表"),
    "grid.x_type": ("X type", "X 轴类型"),
    "grid.x_values": ("X values", "X 轴值"),
    "grid.y_type": ("Y type", "Y 轴类型"),
    "grid.y_values": ("Y values", "Y 轴值"),
    "grid.z_type": ("Z type", "Z 轴类型"),
    "grid.z_values": ("Z values", "Z 轴值"),
    "grid.draw_legend": ("Draw legend", "显示图例"),
    "grid.keep_seeds": ("Keep -1 for seeds", "保持种子为 -1"),
    "grid.keep_seeds_info": (
        "Seed -1: a new random seed for every cell instead of one for the whole grid.",
        "种子为 -1 时：每格各取一个随机种子，而不是整张图共用一个。",
    ),
    "grid.margin": ("Grid margins (px)", "网格间距（像素）"),
    "grid.pick_values": ("Pick values", "选择取值"),
    "grid.include_sub_images": ("Include Sub Images", "包含子图像"),
    "grid.include_sub_grids": ("Include Sub Grids", "包含子网格"),
    "grid.vary_seeds_x": ("Vary seeds for X", "X 轴递增种子"),
    "grid.vary_seeds_y": ("Vary seeds for Y", "Y 轴递增种子"),
    "grid.vary_seeds_z": ("Vary seeds for Z", "Z 轴递增种子"),
    "grid.lora": ("LoRA for the weight axis", "权重轴所用的 LoRA"),
    "grid.run": ("Training run for the checkpoint axis", "检查点轴所用的训练任务"),
    "grid.run_button": ("Generate grid", "生成图表"),
    "control.title": ("ControlNet", "ControlNet"),
    "control.unit": ("Unit {number}", "单元 {number}"),
    "control.enabled": ("Enable", "启用"),
    "control.pixel_perfect": ("Pixel perfect", "完美像素"),
    "control.image": ("Control image", "控制图"),
    "control.map": ("Preprocessor result", "预处理结果"),
    "control.module": ("Preprocessor", "预处理器"),
    "control.model": ("ControlNet model", "ControlNet 模型"),
    "control.preview": ("Preview", "预览"),
    "control.weight": ("Control weight", "控制权重"),
    "control.guidance_start": ("Starting control step", "引导介入时机"),
    "control.guidance_end": ("Ending control step", "引导终止时机"),
    "control.resize_mode": ("Resize mode", "缩放模式"),
    "control.control_mode": ("Control mode", "控制模式"),
    "control.hr_option": ("Hires fix passes", "高清修复阶段"),
    "control.processor_res": ("Preprocessor resolution", "预处理器分辨率"),
    "control.threshold_a": ("Parameter A", "参数 A"),
    "control.threshold_b": ("Parameter B", "参数 B"),
    "control.no_image": ("Upload a control image first.", "请先上传控制图。"),
    "control.no_model": ("ControlNet unit {number}: choose a ControlNet model (or disable the unit).",
                         "ControlNet 单元 {number}：请选择 ControlNet 模型（或停用该单元）。"),
    # upscalers (issue 15)
    "extras.upscaler_2": ("Upscaler 2", "放大算法 2"),
    "extras.upscaler_2_visibility": ("Upscaler 2 visibility", "放大算法 2 强度"),
    # portrait (issue 16): ui/tabs/portrait.py
    "tab.portrait": ("Portrait", "AI 写真"),
    "portrait.person": ("Person", "人物"),
    "portrait.templates": ("Templates", "模板"),
    "portrait.make": ("Make", "生成写真"),
    "portrait.photos_help": (
        "Upload 5 to 20 clear photos of one person (face at least 128 px, upright). "
        "**Check photos** shows which ones training keeps and why the others are left out.",
        "上传同一个人的 5 到 20 张清晰照片（人脸至少 128 像素、端正）。"
        "**检查照片** 会显示训练会用哪些照片，以及其余照片不用的原因。",
    ),
    "portrait.photos": ("Photos of the person", "人物照片"),
    "portrait.check": ("Check photos", "检查照片"),
    "portrait.kept": ("Kept (cropped around the face)", "可用照片（按人脸裁剪）"),
    "portrait.refused": ("Left out", "未采用"),
    "portrait.column.file": ("File", "文件"),
    "portrait.column.reason": ("Reason", "原因"),
    "portrait.kept_caption": ("{file} · distance {distance}", "{file} · 距离 {distance}"),
    "portrait.kept_reference": ("{file} · reference · distance {distance}", "{file} · 参考照 · 距离 {distance}"),
    "portrait.check_enough": ("{kept} of {total} photos usable: ready to train.", "{total} 张照片中 {kept} 张可用：可以开始训练。"),
    "portrait.check_too_few": (
        "{kept} of {total} photos usable: too few to train, add clearer photos of the face.",
        "{total} 张照片中仅 {kept} 张可用：不足以训练，请补充更清晰的人脸照片。",
    ),
    "portrait.name": ("Name", "人物名称"),
    "portrait.trigger": ("Trigger word", "触发词"),
    "portrait.base": ("Base model", "底模"),
    "portrait.steps": ("Training steps (0: preset's)", "训练步数（0：使用预设）"),
    "portrait.advanced": ("More settings", "更多设置"),
    "portrait.field.resolution": ("Resolution (0: preset's)", "分辨率（0：使用预设）"),
    "portrait.field.save_every_steps": ("Score every N steps (0: preset's)", "每 N 步评分（0：使用预设）"),
    "portrait.field.rank": ("LoRA rank (0: preset's)", "LoRA 秩（0：使用预设）"),
    "portrait.field.min_face": ("Smallest face (px)", "最小人脸（像素）"),
    "portrait.field.max_photos": ("Keep at most N photos", "最多保留 N 张照片"),
    "portrait.field.min_photos": ("Need at least N photos", "至少需要 N 张照片"),
    "portrait.field.white_background": ("White background", "白色背景"),
    "portrait.skin_retouch": ("Skin retouching", "皮肤美化"),
    "portrait.field.skin_retouch_strength": ("Skin retouch strength", "美肤强度"),
    "portrait.field.face_backend": ("Face backend", "人脸识别后端"),
    "portrait.train": ("Train", "开始训练"),
    "portrait.cancel": ("Cancel", "取消"),
    "portrait.cancelling": ("Cancelling…", "正在取消…"),
    "portrait.cancelled": ("Cancelled", "已取消"),
    "portrait.job": ("Job", "任务"),
    "portrait.checking": ("Checking photos {done}/{total}", "正在检查照片 {done}/{total}"),
    "portrait.training": ("Training step {step}/{steps} — ETA {eta}", "训练第 {step}/{steps} 步 — 剩余 {eta}"),
    "portrait.loss": ("loss {loss}", "损失 {loss}"),
    "portrait.trained": ("{name} is trained: pick them on the Make tab.", "{name} 训练完成：可在“生成写真”中选择。"),
    "portrait.people": ("People", "人物列表"),
    "portrait.person_pick": ("Person", "人物"),
    "portrait.reference": ("Reference photo", "参考照片"),
    "portrait.scores": ("Identity score per checkpoint", "各检查点的人脸相似度"),
    "portrait.column.name": ("Name", "名称"),
    "portrait.column.trigger": ("Trigger", "触发词"),
    "portrait.column.lora": ("LoRA", "LoRA"),
    "portrait.column.photos": ("Photos", "照片数"),
    "portrait.column.step": ("Step", "步数"),
    "portrait.column.identity": ("Identity", "相似度"),
    "portrait.column.best": ("Best", "最佳"),
    "portrait.column.in_library": ("In library", "已入库"),
    "portrait.template_library": ("Template library", "模板库"),
    "portrait.template_file": ("Template photo", "模板照片"),
    "portrait.template_name": ("Template name (empty: the file's)", "模板名称（留空：使用文件名）"),
    "portrait.template_add": ("Add template", "添加模板"),
    "portrait.template_pick": ("Template", "模板"),
    "portrait.template_delete": ("Delete template", "删除模板"),
    "portrait.template_none": ("choose a template photo first", "请先选择模板照片"),
    "portrait.template_none_picked": ("pick a template to delete", "请选择要删除的模板"),
    "portrait.template_added": ("Template {name} added: {faces} face(s).", "已添加模板 {name}：{faces} 张人脸。"),
    "portrait.template_deleted": ("Template {name} deleted.", "已删除模板 {name}。"),
    "portrait.template_caption": ("{name} · {faces} face(s)", "{name} · {faces} 张人脸"),
    "portrait.make_persons": ("Persons (faces left to right)", "人物（按人脸从左到右）"),
    "portrait.make_templates": ("Templates", "模板"),
    "portrait.count": ("Portraits per template", "每个模板的张数"),
    "portrait.seed": ("Seed (-1: random)", "随机种子（-1：随机）"),
    "portrait.make_steps": ("Sampling steps", "采样步数"),
    "portrait.make_run": ("Make portraits", "生成写真"),
    "portrait.refresh": ("Refresh lists", "刷新列表"),
    "portrait.making": ("Painting face {done}/{total}", "正在绘制人脸 {done}/{total}"),
    "portrait.made": ("Done: best identity score first.", "完成：按人脸相似度从高到低排列。"),
    "portrait.results": ("Portraits", "写真结果"),
    "portrait.result_caption": ("{template} · score {score}", "{template} · 相似度 {score}"),
    "portrait.infotext": ("Generation parameters", "生成参数"),
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
