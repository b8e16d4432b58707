"""Chinese help lines of the Train tab's form (`TrainConfig` and its sections), keyed `"ModelClass.field"`.

Part of `ui.field_help.HELP_ZH` (see there); kohya_ss / sd-scripts key names stay in English, as
the config files and `key=value` overrides write them.
"""

from __future__ import annotations

__all__ = ["CFG_SCALE_ZH", "STEPS_ZH", "TRAIN_HELP_ZH"]

# texts several models share (one English description in the config models too)
STEPS_ZH = "采样步数（去噪迭代次数）；对应 A1111 的 'Steps'。"
CFG_SCALE_ZH = "提示词引导系数（无分类器引导强度）：提示词对画面的约束程度；对应 A1111 的 'CFG scale'。"
_SAMPLER_ZH = "A1111 的采样器名称，如 'Euler a' 或 'DPM++ 2M Karras'。"

TRAIN_HELP_ZH: dict[str, str] = {
    # general (train/config.py: TrainConfig)
    "TrainConfig.model": (
        "底模：模型库中的名称、路径，或 tiny-sd15 / tiny-sd2 / tiny-sdxl（对应 kohya 的 pretrained_model_name_or_path）。"
    ),
    "TrainConfig.family": "预设适用的模型系列；会与所选底模核对。",
    "TrainConfig.method": (
        "训练方式：lora、embedding（文本反演 textual inversion）、pivotal（LoRA + 触发词嵌入）、"
        "dreambooth 或 finetune（训练整个 UNet，保存为大模型检查点）。"
    ),
    "TrainConfig.trigger": "在提示词中调出训练主体的触发词（一个词）；embedding 和 pivotal 必须填写。",
    "TrainConfig.seed": "训练噪声、时间步和数据打乱所用的随机种子（对应 kohya 的 seed）。",
    "TrainConfig.clip_skip": "在文本编码器的倒数第 N 层停止（对应 kohya 的 clip_skip；许多二次元模型用 2）。",
    # data (train/sections.py: DataConfig)
    "DataConfig.dir": "已导入的数据集名称，或文件夹 / 元数据文件路径（对应 kohya 的 train_data_dir、in_json）。",
    "DataConfig.default_caption": (
        "没有标注的图片所用的标注（EasyPhoto：触发词；kohya：NN_name 文件夹的名称）。"
    ),
    "DataConfig.caption_prefix_trigger": "在每条不含触发词的标注开头加上触发词。",
    "DataConfig.shuffle_tags": (
        "每一步随机打乱以逗号分隔的标注标签，前 `keep_tokens` 个保持不动（对应 kohya 的 shuffle_caption）。"
    ),
    "DataConfig.keep_tokens": (
        "标注开头保持不动的标签数：打乱时位置不变，标签丢弃时也不会被丢弃（对应 kohya 的 keep_tokens）。"
    ),
    "DataConfig.caption_dropout": "图片每次参与训练时改用空标注的概率（对应 kohya 的 caption_dropout_rate）。",
    "DataConfig.flip": "随机水平翻转；每张图多缓存一份翻转后的潜空间（对应 kohya 的 flip_aug）。",
    "DataConfig.max_upscale": "需要放大超过此倍数才能填满所在分桶的图片不采用。",
    "DataConfig.tag_dropout": (
        "以此概率丢弃每个标注标签，前 keep_tokens 个除外（对应 kohya 的 caption_tag_dropout_rate）。"
    ),
    "DataConfig.color_aug": (
        "图片每次参与训练时轻微随机调整色相/亮度（对应 kohya 的 color_aug）；开启后潜空间每步重新编码，不再缓存。"
    ),
    "DataConfig.repeats": (
        "每个 epoch 中每张图的重复次数（对应 kohya 的 num_repeats / dataset_repeats）；"
        "默认：图片文件夹名的 NN_ 前缀，没有则为 1。"
    ),
    "DataConfig.min_bucket_reso": (
        "宽高比分桶的最小边长，单位像素（对应 kohya 的 min_bucket_reso）；默认：分辨率的一半，最多 256。"
    ),
    "DataConfig.max_bucket_reso": "宽高比分桶的最大边长，单位像素（对应 kohya 的 max_bucket_reso）；默认：2 x 分辨率。",
    "DataConfig.bucket_reso_steps": "分桶边长取此值的倍数，单位像素（对应 kohya 的 bucket_reso_steps）。",
    "DataConfig.bucket_no_upscale": (
        "小图保持原尺寸（向下取整到 bucket_reso_steps 的倍数），不放大（对应 kohya 的 bucket_no_upscale）。"
    ),
    "DataConfig.caption_extension": (
        "文件夹中的标注文件：只读取每张图旁边这一种扩展名的文件，例如 BLIP 标注用 '.caption'"
        "（对应 kohya 的 caption_extension）；默认：'.txt'，没有则读 '.caption'。"
    ),
    "DataConfig.max_token_length": (
        "文本编码器读取的标注 token 数（对应 kohya 的 max_token_length）：150 或 225 把长标注按 75 个 token"
        " 分段编码再拼接，与 A1111 读取长提示词相同；超出部分会被截断（训练时会提示截断了多少条）。Kolors 读取 256 个。"
    ),
    # train (train/train_section.py: TrainSection)
    "TrainSection.steps": (
        "训练步数，即优化器更新次数（对应 kohya 的 max_train_steps）。steps、epochs_per_image、max_epochs "
        "三者只设一个；默认：1000 步。"
    ),
    "TrainSection.epochs_per_image": (
        "按每张图的训练次数（计入重复次数）计算训练时长；steps = 此值 x 图片数 / (batch_size x grad_accum)。"
    ),
    "TrainSection.max_epochs": (
        "按 kohya 的 epoch 数计算训练时长：每个 epoch 中每张图按重复次数各训练一遍（对应 kohya 的 max_train_epochs）。"
    ),
    "TrainSection.max_steps_per_image": "训练量上限：steps <= 此值 x 图片数（EasyPhoto）。",
    "TrainSection.batch_size": "批量大小：每批的图片数（对应 kohya 的 train_batch_size）。",
    "TrainSection.grad_accum": (
        "梯度累积：每次优化器更新累加的批数，等效批量大小为 batch_size x grad_accum"
        "（对应 kohya 的 gradient_accumulation_steps）。"
    ),
    "TrainSection.learning_rate": (
        "UNet / LoRA 权重的学习率（对应 kohya 的 learning_rate、unet_lr）；默认 1e-4，dreambooth/finetune 为 2e-6，"
        "prodigy 和 D-Adaptation 为 1.0（作为倍率）。"
    ),
    "TrainSection.text_encoder_lr": "文本编码器权重的学习率（对应 kohya 的 text_encoder_lr）；默认：与 learning_rate 相同。",
    "TrainSection.weight_decay": "优化器的权重衰减（对应 kohya optimizer_args 中的 weight_decay）。",
    "TrainSection.optimizer": (
        "优化器（对应 kohya 的 optimizer_type，大小写均可：AdamW8bit、Prodigy……）；adamw8bit 需要 bitsandbytes "
        "和 CUDA GPU，除 adamw 外的其他优化器需要 pytorch-optimizer 包。"
    ),
    "TrainSection.optimizer_args": (
        "优化器的关键字参数，会按其函数签名检查，如 {betas: [0.9, 0.99]}（对应 kohya 的 optimizer_args）。"
    ),
    "TrainSection.lr_scheduler": (
        "学习率调度器（对应 kohya 的 lr_scheduler）；'adafactor' 沿用 relative-step 模式下 Adafactor 自身的学习率。"
    ),
    "TrainSection.lr_warmup_steps": (
        "学习率从 0 线性预热到设定值的步数（对应 kohya 的 lr_warmup_steps）；按训练总步数的比例设置：lr_warmup_ratio。"
    ),
    "TrainSection.lr_warmup_ratio": (
        "按训练总步数的比例设置预热，例如 0.1（对应 kohya 的 lr_warmup_steps 小于 1 时）：预热 int(比例 x 步数) 步；"
        "取代 lr_warmup_steps。"
    ),
    "TrainSection.lr_scheduler_num_cycles": "cosine_with_restarts 的硬重启次数（对应 kohya 的 lr_scheduler_num_cycles）。",
    "TrainSection.lr_scheduler_power": "多项式衰减的指数（对应 kohya 的 lr_scheduler_power）。",
    "TrainSection.resolution": (
        "训练分辨率，单位像素：每个分桶约含 resolution^2 个像素（对应 kohya 的 resolution，仅支持正方形）；"
        "不填时取底模的原生尺寸：SD 1.x 512，SD 2.x 768-v 768，SDXL 与 Kolors 1024。"
    ),
    "TrainSection.mixed_precision": (
        "计算精度（对应 kohya 的 mixed_precision）；auto：GPU 支持时用 bf16，否则 fp16；CPU 上为 no（fp32）。"
    ),
    "TrainSection.vae_fp32": (
        "用 fp32 的 VAE 编码训练潜变量（对应 kohya 的 no_half_vae、sdxl_no_half_vae）；关闭时，GPU 上 VAE 以模型的 bf16"
        "（GPU 不支持 bf16 时为 fp16）编码，与 mixed_precision 无关，且不会在出现 NaN 时重试：SDXL 的 VAE 在 fp16 下可能溢出。"
        "其潜变量与半精度的分开缓存。"
    ),
    "TrainSection.gradient_checkpointing": (
        "梯度检查点：反向传播时重新计算激活值，省显存但更慢（对应 kohya 的 gradient_checkpointing）。"
    ),
    "TrainSection.torch_compile": (
        "训练时用 torch.compile 编译 UNet（对应 kohya 的 torch_compile）：每种分桶尺寸只编译一次（静态形状），"
        "之后的步骤运行融合后的代码；在 GPU 上训练数百步以上才划算。"
    ),
    "TrainSection.dynamo_backend": (
        "torch.compile 的后端（对应 kohya 的 dynamo_backend）；eager 和 aot_eager 只做追踪、不生成代码（用于调试）。"
    ),
    "TrainSection.min_snr_gamma": "Min-SNR 损失加权的 gamma，常用 5；不设 = 关闭（对应 kohya 的 min_snr_gamma）。",
    "TrainSection.noise_offset": (
        "噪声偏移强度，如 0.05-0.1，可让暗部更暗、亮部更亮；0 = 关闭（对应 kohya 的 noise_offset）。"
    ),
    "TrainSection.multires_noise_iterations": (
        "金字塔（kohya 的 multires）多分辨率噪声的层数，通常 6-10；0 = 关闭（对应 kohya 的 multires_noise_iterations）。"
    ),
    "TrainSection.multires_noise_discount": (
        "每一较粗层金字塔噪声的权重，通常 0.1-0.3（对应 kohya 的 multires_noise_discount）。"
    ),
    "TrainSection.attention": (
        "注意力实现；auto：已安装 xformers 时用 xformers，否则用 PyTorch SDPA（对应 kohya 的 xformers / sdpa）。"
    ),
    "TrainSection.max_grad_norm": "把梯度范数裁剪到此值；不设 = 不裁剪（对应 kohya 的 max_grad_norm）。",
    "TrainSection.save_every_steps": (
        "每 N 步保存一个检查点（对应 kohya 的 save_every_n_steps）；默认 500，设置了 save_every_epochs 时关闭。"
    ),
    "TrainSection.save_every_epochs": "每 N 个 epoch 结束时保存一个检查点（对应 kohya 的 save_every_n_epochs）。",
    "TrainSection.keep_states": (
        "保留的可续训优化器状态数，从最新的算起；默认：LoRA 训练全部保留，dreambooth/finetune 只保留最后一个。"
    ),
    "TrainSection.ema_decay": (
        "对训练权重做指数移动平均 (EMA) 的衰减率（如 0.999）；保存的文件使用平均后的权重。不设 = 关闭。"
    ),
    "TrainSection.cache_text_encoder_outputs": (
        "文本编码器冻结且标注固定时，把标注的文本编码器输出缓存到磁盘（对应 kohya 的 cache_text_encoder_outputs）。"
    ),
    # lora (train/sections.py: LoraConfig)
    "LoraConfig.rank": "LoRA 的网络维度 (rank)：低秩矩阵的大小（对应 kohya 的 network_dim）。",
    "LoraConfig.alpha": (
        "LoRA alpha：更新量按 alpha / rank 缩放，alpha = rank 即不缩放（对应 kohya 的 network_alpha）。"
    ),
    "LoraConfig.targets": (
        "加 LoRA 的层：attn（仅注意力层）、kohya（注意力层和 transformer 投影层，同 sd-scripts 的 networks.lora）、"
        "locon（kohya 再加 3x3 卷积层）。"
    ),
    "LoraConfig.conv_rank": "locon：3x3 卷积层的网络维度 (rank)（对应 kohya 的 conv_dim）；默认：与 rank 相同。",
    "LoraConfig.type": (
        "网络类型：普通 LoRA，或按 LyCORIS 格式保存的 LyCORIS LoHa / LoKr"
        "（对应 kohya 的 network_module lycoris.kohya 与 network_args 中的 algo）。"
    ),
    "LoraConfig.train_text_encoder": (
        "同时在文本编码器上训练 LoRA 层（对应 kohya 的 network_train_unet_only 为 false）。"
    ),
    "LoraConfig.dropout": "对 LoRA 降维投影（down）的输出做 dropout（对应 kohya 的 network_dropout）。",
    "LoraConfig.conv_alpha": (
        "locon：3x3 卷积层的 alpha，卷积的更新按 conv_alpha / conv_rank 缩放（对应 kohya 的 conv_alpha）；默认：与 alpha 相同。"
    ),
    # embedding (train/sections.py: EmbeddingConfig)
    "EmbeddingConfig.num_vectors": "触发词代表的 token 数（嵌入中每个 token 的向量数）。",
    "EmbeddingConfig.init_text": "初始化文本：用这些词的 token 嵌入作为触发词向量的初始值。",
    "EmbeddingConfig.learning_rate": "嵌入向量的学习率；默认：train.text_encoder_lr，未设置时用 train.learning_rate。",
    # prior preservation (train/sections.py: PriorConfig)
    "PriorConfig.class_prompt": (
        "正则化（类别）图片的提示词，如 'a photo of a dog'；留空 = 不做先验保留"
        "（对应 kohya 正则化子集的 class_tokens）。"
    ),
    "PriorConfig.class_dir": (
        "正则化图片的文件夹或数据集（对应 kohya 的 reg_data_dir）；默认：lorastudio 自己的 "
        "datasets/class-<prompt>-<settings>-<model>-<resolution>。"
    ),
    "PriorConfig.num_images": "需要的正则化图片数量：不足的会自动生成，直到文件夹中有这么多张。",
    "PriorConfig.loss_weight": "正则化图片损失相对于训练损失的权重（对应 kohya 的 prior_loss_weight）。",
    "PriorConfig.negative_prompt": "生成正则化图片时的反向提示词。",
    "PriorConfig.steps": "生成正则化图片时的采样步数。",
    "PriorConfig.cfg_scale": CFG_SCALE_ZH,
    "PriorConfig.sampler": _SAMPLER_ZH,
    "PriorConfig.seed": "第一张正则化图片的随机种子；第 i 张使用 seed + i（种子固定，文件夹可以重复使用）。",
    # output (train/sections.py: OutputConfig)
    "OutputConfig.name": (
        "LoRA / 模型在模型库中的文件名，不含后缀（对应 kohya 的 output_name）；默认：训练任务（run）的名称。"
    ),
    "OutputConfig.save_precision": (
        "保存的 LoRA / LyCORIS 文件及 dreambooth/finetune 检查点的精度（对应 kohya 的 save_precision；"
        "按其指南推荐用 fp16）。"
    ),
    "OutputConfig.keep_last": (
        "保留的步数检查点个数，从最新的算起（对应 kohya 的 save_last_n_epochs）；最终的和评分最高的始终保留。"
        "默认：全部保留。"
    ),
    # samples during training (train/sections.py: SamplesConfig)
    "SamplesConfig.prompts": (
        "每次出采样图时使用的提示词（对应 kohya 的 sample_prompts）；留空 = 不出采样图。每行可带 kohya 的选项："
        "--n 反向提示词，--w/--h 尺寸，--d 种子，--l CFG，--s 步数，--ss 采样器。"
    ),
    "SamplesConfig.every_steps": "每 N 步出一次采样图（对应 kohya 的 sample_every_n_steps）；默认：每个检查点出一次。",
    "SamplesConfig.negative": "采样图的反向提示词。",
    "SamplesConfig.steps": STEPS_ZH,
    "SamplesConfig.cfg_scale": CFG_SCALE_ZH,
    "SamplesConfig.sampler": "采样图所用的 A1111 采样器名称（对应 kohya 的 sample_sampler）。",
    "SamplesConfig.seed": "每张采样图的随机种子（-1 = 随机）。",
    # scoring the checkpoints (train/sections.py: ScoringConfig)
    "ScoringConfig.enabled": "训练结束后给各检查点评分，并保留最佳的一个。",
    "ScoringConfig.prompts": "对比图和图像评分方法所用的提示词；默认：触发词和一条训练标注。",
    "ScoringConfig.scorers": "要运行的评分方法；第一个能运行的评分方法决定最佳检查点。",
    "ScoringConfig.clip_model": "本地 CLIP 视觉模型文件夹；设置后启用 clip_similarity 评分。",
    "ScoringConfig.tagger_model": "本地 WD14 标签器文件夹；设置后启用 tag_agreement 评分。",
    "ScoringConfig.validation_dir": "留出的验证图片，用于 validation_loss 和作为参考图；默认：取几张训练图片。",
    "ScoringConfig.steps": "对比图的采样步数。",
    "ScoringConfig.cfg_scale": CFG_SCALE_ZH,
    "ScoringConfig.sampler": _SAMPLER_ZH,
    "ScoringConfig.seed": "对比图中每张图的随机种子（-1 = 随机）。",
}
