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
    # train tab (ui/tabs/train.py, ui/config_form.py): "trainform.<config key>" labels a form field;
    # a key without one is labelled with the config key itself (the YAML / CLI / API name)
    "tab.train": ("Train", "训练"),
    "train.preset": ("Preset", "预设"),
    "train.no_preset": ("(none: the config's defaults)", "（无：使用默认配置）"),
    "train.start": ("Start training", "开始训练"),
    "train.cancel": ("Cancel", "取消"),
    "train.resume": ("Resume", "继续训练"),
    "train.refresh": ("Refresh lists", "刷新列表"),
    "train.job": ("Training job", "训练任务"),
    "train.loss": ("Loss", "损失"),
    "train.samples": ("Sample images", "采样图片"),
    "train.checkpoints": ("Checkpoints and scores", "检查点与评分"),
    "train.step": ("Checkpoint step", "检查点步数"),
    "train.use_checkpoint": ("Use this checkpoint", "使用此检查点"),
    "train.picked": ("Step {step} is now the LoRA {name} in the library.", "第 {step} 步已作为 LoRA {name} 放入模型库。"),
    "train.cancelling": ("Cancelling…", "正在取消…"),
    "train.cancelled": ("Cancelled. Resume continues from the last checkpoint.", "已取消。点击“继续训练”将从上一个检查点继续。"),
    "train.done": ("Finished: the LoRA {name} is in the library.", "训练完成：LoRA {name} 已放入模型库。"),
    "train.column.step": ("Step", "步数"),
    "train.column.best": ("Best", "最佳"),
    "train.column.in_library": ("In library", "已入库"),
    "trainform.section.general": ("Model and method", "模型与方法"),
    "trainform.section.data": ("Data set", "数据集"),
    "trainform.section.train": ("Training", "训练参数"),
    "trainform.section.lora": ("LoRA network", "LoRA 网络"),
    "trainform.section.embedding": ("Trigger embedding", "触发词嵌入"),
    "trainform.section.prior": ("Prior preservation", "先验保留"),
    "trainform.section.output": ("Output files", "输出文件"),
    "trainform.section.samples": ("Sample images", "采样图片"),
    "trainform.section.scoring": ("Checkpoint scoring", "检查点评分"),
    "trainform.output.name": ("Name (of the LoRA in the library)", "名称（模型库中的 LoRA 名）"),
    "trainform.model": ("Base model", "底模"),
    "trainform.data.dir": ("Data set", "数据集"),
    "trainform.method": ("Method", "训练方法"),
    "trainform.trigger": ("Trigger word", "触发词"),
    "trainform.train.steps": ("Steps (0: from the epochs)", "训练步数（0：按轮数计算）"),
    "trainform.train.epochs_per_image": ("Epochs per image (0: not set)", "每张图片的轮数（0：不设置）"),
    "trainform.lora.rank": ("Rank (dim)", "秩 (dim)"),
    "trainform.train.learning_rate": ("Learning rate", "学习率"),
    "trainform.train.resolution": ("Resolution", "分辨率"),
    "trainform.family": ("Model family", "模型系列"),
    "trainform.seed": ("Seed", "随机种子"),
    "trainform.clip_skip": ("Clip skip", "跳过 CLIP 层"),
    "trainform.data.default_caption": ("Caption for images without one", "无标注图片的默认标注"),
    "trainform.data.shuffle_tags": ("Shuffle tags", "打乱标签顺序"),
    "trainform.data.keep_tokens": ("Keep first tags", "保留前几个标签"),
    "trainform.data.caption_dropout": ("Caption dropout", "标注丢弃率"),
    "trainform.data.flip": ("Flip images", "水平翻转"),
    "trainform.data.repeats": ("Repeats (0: the data set's)", "重复次数（0：数据集自带）"),
    "trainform.train.batch_size": ("Batch size", "批大小"),
    "trainform.train.grad_accum": ("Gradient accumulation", "梯度累积"),
    "trainform.train.text_encoder_lr": ("Text encoder learning rate", "文本编码器学习率"),
    "trainform.train.optimizer": ("Optimizer", "优化器"),
    "trainform.train.lr_scheduler": ("Learning rate schedule", "学习率调度"),
    "trainform.train.lr_warmup_steps": ("Warm-up steps", "预热步数"),
    "trainform.train.mixed_precision": ("Mixed precision", "混合精度"),
    "trainform.train.min_snr_gamma": ("Min-SNR gamma", "最小信噪比 gamma"),
    "trainform.train.noise_offset": ("Noise offset", "噪声偏移"),
    "trainform.train.save_every_steps": ("Save every N steps", "每 N 步保存"),
    "trainform.train.max_epochs": ("Epochs (0: not set)", "训练轮数（0：不设置）"),
    "trainform.lora.alpha": ("Alpha", "Alpha"),
    "trainform.lora.type": ("Network type", "网络类型"),
    "trainform.lora.train_text_encoder": ("Train the text encoder", "训练文本编码器"),
    "trainform.embedding.num_vectors": ("Vectors per token", "每个词的向量数"),
    "trainform.embedding.init_text": ("Start from the word", "初始化词"),
    "trainform.prior.class_prompt": ("Class prompt", "类别提示词"),
    "trainform.output.save_precision": ("Save precision", "保存精度"),
    "trainform.output.keep_last": ("Keep last N checkpoints (0: all)", "保留最后 N 个检查点（0：全部）"),
    "trainform.samples.prompts": ("Sample prompts (one per line)", "采样提示词（每行一条）"),
    "trainform.samples.every_steps": ("Sample every N steps (0: with checkpoints)", "每 N 步采样（0：随检查点）"),
    "trainform.samples.negative": ("Negative prompt", "反向提示词"),
    "trainform.samples.steps": ("Sampling steps", "采样步数"),
    "trainform.scoring.enabled": ("Score checkpoints and pick the best", "为检查点评分并选出最佳"),
    "trainform.scoring.prompts": ("Scoring prompts (one per line)", "评分提示词（每行一条）"),
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
