"""The help line under a form control, in the page's language.

A control's help line is its config field's description (`Field(..., description=...)`), the
one English text CLI --help and the API docs show too, so it stays English there and on the
English page. The Chinese page shows the text of `HELP_ZH`, keyed `"ModelClass.field"`, with
code names, option values, file names and A1111/kohya keys left in English. The page being
built sets the language (`page_language`, in `ui.app.build_blocks`), so `forms.field_control`
and `config_form` need no language argument.

A field the UI shows without a Chinese text here fails tests/test_ui_field_help.py; should one
slip through, the page shows the English description rather than fail to build.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import BaseModel

from lorastudio.ui.field_help_train import CFG_SCALE_ZH, STEPS_ZH, TRAIN_HELP_ZH

__all__ = ["HELP_ZH", "field_help", "page_language"]

_LANGUAGE: ContextVar[str] = ContextVar("lorastudio_ui_page_language", default="en")


@contextmanager
def page_language(language: str) -> Iterator[None]:
    """Help lines of the controls built inside this block are in `language` ("en", "zh")."""
    token = _LANGUAGE.set(language)
    try:
        yield
    finally:
        _LANGUAGE.reset(token)


def field_help(model: type[BaseModel], name: str, language: str | None = None) -> str:
    """The help line of `model.name` in `language` (default: the page's): the field's English
    description, or its Chinese text on a Chinese page ("" for a field without a description)."""
    english = (model.model_fields[name].description or "").strip()
    if not english or (language or _LANGUAGE.get()) != "zh":
        return english
    return HELP_ZH.get(f"{model.__name__}.{name}", english)


# "ModelClass.field" -> 简体中文 (the Generate tab, ControlNet units, story mode, Settings, data sets,
# portraits); the Train tab's sections are in `field_help_train`.
HELP_ZH: dict[str, str] = {
    # Generate tab (generate/config.py: GenerateConfig)
    "GenerateConfig.prompt": "正向提示词，使用 A1111 语法：(word:1.2)、[from:to:0.5]、<lora:name:0.8>、BREAK。",
    "GenerateConfig.negative_prompt": "反向提示词（语法与正向提示词相同）。",
    "GenerateConfig.vae": "单独的 VAE 文件或文件夹，替换模型自带的 VAE。",
    "GenerateConfig.steps": STEPS_ZH,
    "GenerateConfig.cfg_scale": CFG_SCALE_ZH,
    "GenerateConfig.width": (
        "宽度，单位像素（8 的倍数）；默认：取自原图（原图的尺寸，或按原图宽高比由高度换算），"
        "没有原图时用模型的原生尺寸。"
    ),
    "GenerateConfig.height": (
        "高度，单位像素（8 的倍数）；默认：取自原图（原图的尺寸，或按原图宽高比由宽度换算），"
        "没有原图时用模型的原生尺寸。"
    ),
    "GenerateConfig.seed": "第一张图的随机种子；同一批的第 i 张图使用 seed + i（-1 = 随机）。",
    "GenerateConfig.subseed": "变异种子（-1 = 随机）；第 i 张图使用 subseed + i，所有图共用同一个主种子。",
    "GenerateConfig.subseed_strength": "噪声从主种子向变异种子偏移的程度（0 = 关闭）。",
    "GenerateConfig.seed_resize_from_w": "按此宽度生成噪声并居中对齐（0 = 关闭；宽和高需同时设置）。",
    "GenerateConfig.seed_resize_from_h": "按此高度生成噪声并居中对齐（0 = 关闭；宽和高需同时设置）。",
    "GenerateConfig.batch_size": "每批生成的图片数。",
    "GenerateConfig.count": "批次数（对应 A1111 的 n_iter）。",
    "GenerateConfig.clip_skip": "在文本编码器的倒数第 N 层停止（跳过 CLIP 层数）。",
    "GenerateConfig.eta": "DDIM 的 eta：每一步混入的新噪声量（0 = 确定性采样）；其他采样器忽略此项。",
    "GenerateConfig.pad_conds": (
        "正向与反向提示词的 75 token 分块数不同时，用空块补齐较短的一方，使两者在一次 UNet 调用中计算"
        "（对应 A1111 的 'Pad prompt/negative prompt'，infotext 中为 'Pad conds'：更快，但出图不同）；"
        "关闭时分两次调用，与 A1111 的默认做法一致。"
    ),
    "GenerateConfig.rng": (
        "噪声的随机数来源（A1111 的 'Random number generator source'，infotext 中为 'RNG'）：CPU 用 torch 的 CPU"
        " 生成器，在任何机器上都相同；NV 在 CPU 上生成 NVIDIA 的 Philox 随机数，即 CUDA GPU 生成的噪声；GPU 在 CUDA"
        " 设备上生成，没有 CUDA 时使用 NV 随机数，也就是 NVIDIA 显卡生成的数。没有 'RNG' 的 A1111 图片用的是 GPU。"
    ),
    "GenerateConfig.ensd": (
        "Eta 噪声种子偏移（A1111 的 'eta_noise_seed_delta'，infotext 中为 'ENSD'，NAI 类模型常用 31337）：Euler a、"
        "DPM2 a、DPM++ 2S a、LCM 以及 eta 大于 0 的 DDIM 每一步的噪声改用以“种子 + ENSD”为种子的生成器，"
        "而不是继续使用种子的生成器（0 = 关闭）。"
    ),
    "GenerateConfig.old_step_noise": (
        "图片写入 'RNG' 之前 lorastudio 的步进噪声（infotext 中为 'Old step noise'）：以“种子 + 1”为种子的 CPU"
        " 生成器；读取这类图片的配方时自动开启，使其可以完全复现。"
    ),
    "GenerateConfig.unipc_order": (
        "UniPC 的求解器阶数（A1111 的 'uni_pc_order'，infotext 中为 'UniPC order'）；步数少于阶数的一轮按其步数的阶数运行。"
    ),
    "GenerateConfig.unipc_variant": (
        "UniPC 的变体（A1111 的 'uni_pc_variant'，infotext 中为 'UniPC variant'）：bh1、bh2 或 vary_coeff。"
    ),
    "GenerateConfig.unipc_skip_type": (
        "UniPC 的步长间隔方式（A1111 的 'uni_pc_skip_type'，infotext 中为 'UniPC skip type'）："
        "time_uniform、time_quadratic 或 logSNR。"
    ),
    "GenerateConfig.unipc_lower_order_final": (
        "UniPC 在最后几步降低阶数（A1111 的 'uni_pc_lower_order_final'，infotext 中为 'UniPC lower order final'）。"
    ),
    "GenerateConfig.old_unipc": (
        "A1111 方式之前 lorastudio 的 UniPC（infotext 中为 'Old UniPC'）：diffusers 的 UniPCMultistepScheduler"
        " 及其默认值；读取这类图片的配方时自动开启，使其可以完全复现。"
    ),
    "GenerateConfig.pad_conds_v0": (
        "A1111 1.6 之前的补齐方式（infotext 中为 'Pad conds v0'，A1111 会给旧版 webui 用 DDIM/PLMS 生成的图片"
        "标上它）：较短的反向提示词重复其最后一个 token 向量直到与正向提示词等长，较长的则截断到该长度；"
        "只调用一次 UNet。优先于 pad_conds。"
    ),
    "GenerateConfig.old_prompt_editing": (
        "A1111 1.6 之前的提示词编辑时间线（infotext 中为 'Old prompt editing timelines'）：[from:to:when] 中"
        "小于 1 的值表示占总步数的比例，大于等于 1 的值表示第几步（写成 1.0 或 1 都一样）；"
        "高清修复阶段沿用第一阶段的时间线。"
    ),
    "GenerateConfig.hires_scale": "高清修复的放大倍数（1 = 关闭）。",
    "GenerateConfig.hires_resize_x": (
        "高清修复：将宽度调整为此值（0 = 按放大倍数，或由高度与宽高比换算）；宽和高都给定时，"
        "放大后的图片裁剪到该尺寸，与 A1111 的 'Resize width to' 相同。"
    ),
    "GenerateConfig.hires_resize_y": "高清修复：将高度调整为此值（见 hires_resize_x）。",
    "GenerateConfig.hires_steps": "高清修复第二阶段的采样步数（0 = 与 steps 相同）。",
    "GenerateConfig.hires_strength": "高清修复第二阶段的重绘幅度。",
    "GenerateConfig.hires_sampler": "高清修复阶段的采样器（A1111 的 'Hires sampler'）；留空或 'Use same sampler' = 与第一阶段相同。",
    "GenerateConfig.hires_schedule": (
        "高清修复阶段的调度类型（A1111 的 'Hires schedule type'）；留空或 'Use same scheduler' = 与第一阶段相同。"
    ),
    "GenerateConfig.hires_prompt": (
        "高清修复阶段的提示词（A1111 的 'Hires prompt'；留空 = 使用正向提示词）；其中的 <lora:...> 标签须与正向提示词相同。"
    ),
    "GenerateConfig.hires_negative_prompt": "高清修复阶段的反向提示词（A1111 的 'Hires negative prompt'；留空 = 使用反向提示词）。",
    "GenerateConfig.initial_noise_multiplier": (
        "图生图：种子噪声先乘以此值再加到原图上（A1111 设置 'Noise multiplier for img2img'，infotext 中为"
        " 'Noise multiplier'；1 = 不变）。"
    ),
    "GenerateConfig.extra_noise": (
        "图生图与高清修复：把种子噪声按此倍数再加一次到加噪后的图上（A1111 设置 'Extra noise multiplier for"
        " img2img and hires fix'，infotext 中为 'Extra noise'；0 = 关闭；应小于重绘幅度）。"
    ),
    "GenerateConfig.strength": "图生图（img2img）的重绘幅度。",
    "GenerateConfig.mask_blur": "蒙版模糊半径，单位像素。",
    "GenerateConfig.inpainting_fill": (
        "蒙版区域内容：0 fill（填充模糊后的颜色）、1 original（原图）、2 latent noise（潜空间噪声）、"
        "3 latent nothing（空白潜空间）。"
    ),
    "GenerateConfig.inpaint_only_masked": "仅以全分辨率重绘蒙版区域。",
    "GenerateConfig.inpaint_padding": "蒙版区域四周的边距，单位像素。",
    # Generate tab: ControlNet units (generate/control_units.py: ControlUnit)
    "ControlUnit.module": "先对图片运行的预处理器（annotator），如 'canny'；'none' = 直接把图片当作控制图。",
    "ControlUnit.model": "studio/controlnet 中的 ControlNet 模型：名称、A1111 标题 'name [hash8]'，或路径。",
    "ControlUnit.weight": "控制权重（ControlNet conditioning scale）。",
    "ControlUnit.guidance_start": "该单元开始起作用的时机，占总步数的比例。",
    "ControlUnit.guidance_end": "该单元停止起作用的时机，占总步数的比例。",
    "ControlUnit.resize_mode": "控制图的宽高比与输出不同时，如何适配输出尺寸。",
    "ControlUnit.control_mode": "提示词与控制图之间的侧重。",
    "ControlUnit.pixel_perfect": "按输出所需的分辨率运行预处理器（忽略 processor_res）。",
    "ControlUnit.processor_res": "预处理器分辨率（短边）。",
    "ControlUnit.threshold_a": "预处理器的第一个参数（如 canny 的低阈值）。",
    "ControlUnit.threshold_b": "预处理器的第二个参数（如 canny 的高阈值）。",
    "ControlUnit.hr_option": "该单元在高清修复的哪些阶段起作用。",
    # Generate tab: story mode (service: SeriesRequest)
    "SeriesRequest.prompts": (
        "提示词列表：每行一个提示词（'#' 开头为注释），或一个 YAML 列表，每项是一个提示词，"
        "或一个含 'prompt' 及该图任意生成参数（seed、steps 等）的映射。"
    ),
    "SeriesRequest.seed_policy": (
        "各提示词的种子：'fixed' 全部使用同一个种子（角色和构图保持一致），'increment' 使用 seed + i，"
        "'random' 每条都用新种子；条目自带的 seed 优先。"
    ),
    # Settings tab (service/preferences.py: Preferences)
    "Preferences.steps": "生成页打开时默认的采样步数。",
    "Preferences.cfg_scale": "生成页打开时默认的提示词引导系数 (CFG)。",
    "Preferences.width": "生成页打开时默认的宽度（留空或 0：使用模型自身的尺寸）。",
    "Preferences.height": "生成页打开时默认的高度（留空或 0：使用模型自身的尺寸）。",
    "Preferences.negative_prompt": "生成页打开时默认的反向提示词。",
    # Data sets tab: clean and caption (data/config.py, service/job_kinds.py)
    "CleanConfig.min_width": "剔除宽度小于此值的图片（像素）。",
    "CleanConfig.min_height": "剔除高度小于此值的图片（像素）。",
    "CleanConfig.min_ratio": "剔除宽高比（宽/高）低于此值的图片。",
    "CleanConfig.max_ratio": "剔除宽高比（宽/高）高于此值的图片。",
    "CleanConfig.dedupe": "去重方式 — exact：像素完全相同；near：感知哈希（phash）相差不超过 phash_threshold 位。",
    "CleanConfig.phash_threshold": "判定两张图片近似重复时，允许不同的最大位数（共 64 位）。",
    "CleanConfig.min_sharpness": "剔除拉普拉斯方差低于此值的图片（模糊）；一般可从 100 左右开始。",
    "CaptionJobConfig.mode": (
        "missing（只给没有标注的图片打标）、overwrite（覆盖原标注）、prepend（加在原标注前）"
        "或 append（加在原标注后）。"
    ),
    "TaggerConfig.general_threshold": "通用标签（general tags）的最低置信度。",
    # Portrait tab: training a person (service/portraits.py: PortraitTrainConfig)
    "PortraitTrainConfig.name": "人物名称：数据集、LoRA 和人物登记条目都以此命名。",
    "PortraitTrainConfig.trigger": "在提示词中调用此人物的触发词；默认：人物名称。",
    "PortraitTrainConfig.base": "用于训练的底模；默认：工作区的默认模型。",
    "PortraitTrainConfig.steps": "训练步数；默认：portrait 预设的步数（800）。",
    "PortraitTrainConfig.resolution": "训练分辨率；默认：预设的值（512）。",
    "PortraitTrainConfig.save_every_steps": "每 N 步保存检查点（并计算人脸相似度）；默认：预设的值（100）。",
    "PortraitTrainConfig.rank": "LoRA 的网络维度 (rank)；默认：预设的值（128）。",
    "PortraitTrainConfig.white_background": "把每张照片中的人物放到白色背景上。",
    "PortraitTrainConfig.skin_retouch": "训练前对每张裁剪照片做皮肤美化（EasyPhoto 训练的默认；其 API 默认关闭）。",
    "PortraitTrainConfig.skin_retouch_strength": "美肤强度：0 = 不变，1 = 完全平滑的皮肤。",
    "PortraitTrainConfig.face_backend": "人脸识别后端（studio/models/faces/<name>）；默认：dlib。",
    "PortraitTrainConfig.min_face": "人脸框小于此值（像素）的照片不采用。",
    "PortraitTrainConfig.max_photos": "最多保留这么多张照片（与平均人脸特征最接近的）。",
    "PortraitTrainConfig.min_photos": "可用照片少于此数时不开始训练。",
    # Portrait tab: making portraits from templates (service/portrait_make.py: PortraitMakeConfig)
    "PortraitMakeConfig.persons": "人物，按从左到右的顺序对应模板中的人脸。",
    "PortraitMakeConfig.templates": "模板名称（studio/templates 中的）或照片路径。",
    "PortraitMakeConfig.count": "每个模板生成的张数（种子依次为 seed、seed+1……）。",
    "PortraitMakeConfig.seed": "第一张结果的随机种子（-1 = 随机）。",
    "PortraitMakeConfig.steps": "每一轮（pass）的采样步数。",
    "PortraitMakeConfig.skin_retouch": "对每张绘制好的人脸做皮肤美化（EasyPhoto 界面的默认；其 API 默认关闭）。",
    "PortraitMakeConfig.skin_retouch_strength": "美肤强度：0 = 不变，1 = 完全平滑的皮肤。",
    "GenerateConfig.mask_invert": "重绘蒙版留黑的部分、保留白色部分（A1111 的 'Inpaint not masked'）。",
    # Generate tab: the X/Y/Z plot (service/grid_request.py: GridRequest, AxisRequest)
    "AxisRequest.values": "A1111 的取值写法：'0.4,0.7,1.0'、'1-5'、'0.4-1.0 [4]'。",
    "GridRequest.draw_legend": "在行、列和 Z 网格旁标注各自的取值（A1111 的 Draw legend）。",
    "GridRequest.lora": "权重轴 / 检查点轴作用的 LoRA 名称。",
    "GridRequest.margin": "格子之间的间距（像素）。",
    "GridRequest.include_sub_images": "在图表之后显示并返回每一格的图像（A1111 的 Include Sub Images）；每格总会保存。",
    "GridRequest.include_sub_grids": "另外保存、显示并返回每个 Z 值的 X/Y 子网格（A1111 的 Include Sub Grids）；只有一个 Z 值时只显示、返回，不保存（同 A1111）。",
    "GridRequest.vary_seeds_x": "每一列换一个种子：该格种子加上列号（A1111）。",
    "GridRequest.vary_seeds_y": "每一行换一个种子，排在各列之后（A1111 的 Vary seeds for Y）。",
    "GridRequest.vary_seeds_z": "每个 Z 网格换一个种子，排在各行之后（A1111 的 Vary seeds for Z）。",
    "GridRequest.run": "检查点轴要逐个试用的训练运行（studio/runs 中的）。",
    **TRAIN_HELP_ZH,
}
