"""The web UI's sentences for the service's errors a web user meets most, by their key.

A `LorastudioError` raised with `key="model_not_found"` (and `params`) is worded on the Chinese
page by `err.model_not_found` (`ui.context.error_text`); so is a failed job, by the key its
result keeps (`Job.error_key`). The English page shows the service's own line, the one the CLI
and the REST API print; the English texts here say the same for reference and keep the table's
two columns alike. An error without a key, or a key without a label, is shown in English.
Part of `ui.i18n.LABELS` (one table, one lookup); a test checks every key raised in src has one.
"""

from __future__ import annotations

__all__ = ["ERROR_LABELS", "ERROR_WHAT"]

# key -> (English, 简体中文); the values are the error's params (`{name}`, `{what}`…)
ERROR_LABELS: dict[str, tuple[str, str]] = {
    # a name that names nothing here (service.names.unknown_name and the loaders)
    "err.model_not_found": (
        "model '{name}' not found; pick one from the model list or import it in the Library tab.",
        "找不到模型“{name}”：请从模型列表中选择，或先在模型库中导入。",
    ),
    "err.vae_not_found": (
        "VAE '{name}' not found; pick one from the VAE list (VAE files live in models/).",
        "找不到 VAE“{name}”：请从 VAE 列表中选择（VAE 文件放在 models/ 文件夹）。",
    ),
    "err.lora_not_found": (
        "LoRA '{name}' not found; check the <lora:…> tag against the Library tab's LoRAs.",
        "找不到 LoRA“{name}”：请对照模型库中的 LoRA 检查提示词里的 <lora:…> 标签。",
    ),
    "err.embedding_not_found": (
        "embedding '{name}' not found; pick one listed in the Library tab.",
        "找不到嵌入（embedding）“{name}”：请使用模型库中列出的名称。",
    ),
    "err.controlnet_not_found": (
        "ControlNet '{name}' not found; pick one from the ControlNet model list.",
        "找不到 ControlNet 模型“{name}”：请从 ControlNet 模型列表中选择。",
    ),
    "err.dataset_not_found": (
        "data set '{name}' not found; pick one in the Data sets tab or import it first.",
        "找不到数据集“{name}”：请在数据集页选择，或先导入。",
    ),
    "err.upload_not_found": (
        "upload '{name}' not found; upload the file again.",
        "找不到上传的文件“{name}”：请重新上传。",
    ),
    "err.upscaler_not_found": (
        "upscaler '{name}' not found; pick one from the upscaler list.",
        "找不到放大算法“{name}”：请从放大算法列表中选择。",
    ),
    "err.name_not_found": ("{what} '{name}' not found; pick one that is listed.", "找不到{what}“{name}”：请选择列表中已有的。"),
    "err.person_not_trained": (
        "person '{name}' is not trained yet; train the person in the Portrait tab first.",
        "人物“{name}”尚未训练：请先在写真页训练该人物。",
    ),
    # sampling choices
    "err.sampler_unknown": ("unknown sampler '{name}'; pick one from the sampler list.", "未知的采样器“{name}”：请从采样器列表中选择。"),
    "err.schedule_unknown": (
        "unknown schedule type '{name}'; pick one from the schedule list.",
        "未知的调度类型“{name}”：请从调度类型列表中选择。",
    ),
    "err.sampler_no_karras": (
        "sampler '{name}' has no Karras schedule; choose another schedule type.",
        "采样器“{name}”没有 Karras 调度：请换一种调度类型。",
    ),
    # data sets and pictures
    "err.dataset_empty": ("data set '{name}' is empty; import images first.", "数据集“{name}”是空的：请先导入图片。"),
    "err.dataset_no_files": (
        "choose at least one image, caption file or zip to import.",
        "请至少选择一张图片、一个标注文件或一个 zip 压缩包再导入。",
    ),
    "err.dataset_nothing_imported": (
        "data set '{name}': no image could be imported ({problems} refused; {why}).",
        "数据集“{name}”：没有导入任何图片（{problems} 个文件被拒绝；{why}）。",
    ),
    "err.dataset_no_readable_image": (
        "data set '{name}': no image could be imported ({problems} refused); '{file}' is not a readable image.",
        "数据集“{name}”：没有导入任何图片（{problems} 个文件被拒绝）；“{file}”不是可读取的图片。",
    ),
    "err.image_unreadable": (
        "{what}: not a readable image (damaged, or a format not supported); use a PNG, JPEG or WebP.",
        "{what}：无法读取的图片（文件损坏或格式不受支持）；请使用 PNG、JPEG 或 WebP。",
    ),
    "err.image_format": (
        "{what}: format {format} is not accepted; use a PNG, JPEG or WebP.",
        "{what}：不接受 {format} 格式；请使用 PNG、JPEG 或 WebP。",
    ),
    "err.image_too_large": ("{what}: {size} is too large; shrink it first.", "{what}：图片尺寸 {size} 过大，请先缩小。"),
    "err.image_bomb": (
        "{what}: too many pixels to open (decompression bomb limit); shrink it first.",
        "{what}：像素过多，超出了防解压炸弹的上限，无法打开；请先缩小图片。",
    ),
    "err.dataset_none_usable": (
        "dataset import: none of the {count} files can be used ({file}: {reason}).",
        "数据集导入：{count} 个文件都不能使用（{file}：{reason}）。",
    ),
    "err.image_missing": ("{what} not found; choose the picture again.", "找不到图片 {what}：请重新选择。"),
    # a file an upload refused (service.uploads.check_upload; a data-set import lists it with `import.<key>`)
    "err.upload_type": (
        "upload '{file}': type {type} is not accepted; send one of {allowed}.",
        "上传的文件“{file}”：不接受 {type} 类型；可上传：{allowed}。",
    ),
    "err.upload_content": (
        "upload '{file}': its content is not a {type} file.",
        "上传的文件“{file}”：内容不是 {type} 格式（文件已损坏，或是改了扩展名的其他格式）。",
    ),
    "err.caption_not_utf8": (
        "upload '{file}': a caption file must be UTF-8 text.",
        "上传的文件“{file}”：标注文件必须是 UTF-8 编码的文本，请用 UTF-8 编码重新保存。",
    ),
    "err.caption_too_large": (
        "upload '{file}': over {limit} bytes; a caption is one line.",
        "上传的文件“{file}”：超过 {limit} 字节；标注应是一行文字。",
    ),
    "err.metadata_too_large": (
        "upload '{file}': over {limit_mib} MiB; upload the folder as a zip.",
        "上传的文件“{file}”：超过 {limit_mib} MiB；请把文件夹打包成 zip 上传。",
    ),
    "err.not_kohya_metadata": (
        "upload '{file}': not kohya metadata; upload kohya's meta_*.json or leave it out.",
        "上传的文件“{file}”不是 kohya 元数据：请上传 kohya 的 meta_*.json，或不要上传它。",
    ),
    "err.json_not_meta_name": (
        "upload '{file}': a .json is read as kohya metadata only under a name holding 'meta'.",
        "上传的文件“{file}”：只有名称含“meta”的 .json（如 meta_cap.json）才会作为 kohya 元数据读取。",
    ),
    # a form's value refused by its config model (config.validation_key); `field` is worded by the
    # form's own label for it (`trainform.<key>`, `generate.<field>`: ui.context.worded_error)
    "err.value_too_small": ("{field}: must be at least {limit} (given: {input}).", "“{field}”不能小于 {limit}（填写的是 {input}）。"),
    "err.value_not_above": ("{field}: must be greater than {limit} (given: {input}).", "“{field}”必须大于 {limit}（填写的是 {input}）。"),
    "err.value_too_large": ("{field}: must be at most {limit} (given: {input}).", "“{field}”不能大于 {limit}（填写的是 {input}）。"),
    "err.value_not_below": ("{field}: must be less than {limit} (given: {input}).", "“{field}”必须小于 {limit}（填写的是 {input}）。"),
    "err.value_not_integer": ("{field}: must be a whole number.", "“{field}”必须是整数。"),
    "err.value_not_number": ("{field}: must be a number.", "“{field}”必须是数字。"),
    "err.value_not_choice": ("{field}: must be one of {choices}.", "“{field}”只能是以下之一：{choices}。"),
    "err.value_missing": ("{field}: required.", "请填写“{field}”。"),
    # names of new things
    "err.name_taken": ("{what} '{name}' already exists; choose another name.", "{what}“{name}”已存在：请换一个名称。"),
    "err.name_not_allowed": (
        "{what} '{name}' is not allowed; use letters, digits, '.', '-' or '_' (no slashes or spaces).",
        "{what}“{name}”不可用：只能使用文字、数字、“.”、“-”或“_”（不能有斜杠或空格）。",
    ),
    "err.name_too_long": ("{what} '{name}…' is too long; use a shorter one.", "{what}“{name}…”太长：请换一个短一些的。"),
    # training runs
    "err.run_exists": (
        "training run '{name}' already exists; set another output name.",
        "训练“{name}”已存在：请换一个输出名称。",
    ),
    "err.run_not_found": ("training run '{name}' not found.", "找不到训练“{name}”。"),
    "err.run_no_checkpoint": (
        "run '{name}' has no saved checkpoint to resume from; start it again instead.",
        "训练“{name}”没有可继续的检查点：请重新开始训练。",
    ),
    "err.run_finished": (
        "run '{name}' finished already; pick one of its checkpoints instead of resuming it.",
        "训练“{name}”已经完成：请选用它的某个检查点，而不是继续训练。",
    ),
    "err.checkpoint_not_found": (
        "run '{run}' has no checkpoint at step {step}; saved: {saved}.",
        "训练“{run}”没有第 {step} 步的检查点；已保存：{saved}。",
    ),
    # the machine and the queue
    "err.disk_full": ("the server's disk is full; try again later.", "服务器磁盘已满，请稍后再试。"),
    "err.disk_space": (
        "{folder}: {free_mib} MiB free but about {needed_mib} MiB are needed; free disk space.",
        "{folder}：剩余 {free_mib} MiB，但需要约 {needed_mib} MiB；请释放磁盘空间。",
    ),
    "err.job_not_found": ("job {id} not found.", "找不到任务 {id}。"),
    "err.job_cancelled": ("cancelled by request", "已按请求取消"),
}

# The Chinese for the English `what` some errors name ("data set name", "LoRA"…); others stay as they are.
ERROR_WHAT: dict[str, str] = {
    "model": "模型",
    "VAE": "VAE",
    "LoRA": "LoRA",
    "embedding": "嵌入",
    "data set": "数据集",
    "data set name": "数据集名称",
    "data-set name": "数据集名称",
    "LoRA name": "LoRA 名称",
    "embedding name": "嵌入名称",
    "import name": "导入名称",
    "name": "名称",
    "person": "人物",
    "run": "训练",
    "trigger": "触发词",
    "template": "模板",
    "template name": "模板名称",
    "person name": "人物名称",
    "run name": "训练名称",
    "new LoRA name": "LoRA 新名称",
    "new model name": "模型新名称",
    "new embedding name": "嵌入新名称",
    "output folder": "输出文件夹",
    "output": "输出文件",
}
