"""The web UI's words for a data-set import's report: why a file was refused or skipped, and the notes.

An import's report rows keep the English `reason` the CLI and the REST API show; a common reason also
has a `key` and its `params` (`data.importer`, `data.sources`, and the upload's own refusals,
`service.uploads.check_upload`), and each note its `note_keys` entry. The Chinese page words a row by
`import.<key>` (the reason alone: the page puts the file's name before it) and a note by
`importnote.<key>` (`ui.tabs.datasets.import_result_markup`); the English page shows the service's
lines, which the English texts here repeat for reference. Part of `ui.i18n.LABELS`.
"""

from __future__ import annotations

__all__ = ["IMPORT_LABELS"]

# key -> (English, 简体中文); the values are the row's or the note's params
IMPORT_LABELS: dict[str, tuple[str, str]] = {
    # a file the import skipped or refused (data.sources, data.importer)
    "import.not_image_file": ("not an image file ({ext}); skipped", "不是图片文件（{ext}），已跳过"),
    "import.no_extension": ("not an image file (no extension); skipped", "不是图片文件（没有扩展名），已跳过"),
    "import.listed_no_image": ("listed in {list} but no such image", "{list} 中列出了它，但没有这张图片"),
    "import.row_no_file_name": ("row has no file_name", "这一行没有 file_name"),
    "import.json_invalid": ("not valid JSON ({error}); its captions not read", "不是有效的 JSON（{error}），其中的标注未读取"),
    "import.kohya_later_step": (
        "kohya metadata not read: {name} is a later step",
        "未读取这个 kohya 元数据：{name} 是更靠后的处理步骤",
    ),
    "import.cannot_unpack": ("cannot unpack ({error})", "无法从压缩包中解压（{error}）"),
    "import.listed_not_found": ("listed but not found", "列出了它，但找不到这个文件"),
    "import.kohya_key_no_image": (
        "image_key names no image file next to the json",
        "json 旁边没有 image_key 所指的图片文件",
    ),
    "import.cannot_read": ("cannot read ({error})", "无法读取（{error}）"),
    "import.duplicate": ("already imported as {file}", "重复的图片：已作为 {file} 导入"),
    "import.image_unreadable": (
        "damaged or truncated image, or not an image Pillow can read; re-download or remove it",
        "无法读取的图片（文件损坏、不完整或格式不受支持）；请重新下载或删除它",
    ),
    "import.image_too_large": ("{size} is too large; shrink it first", "图片尺寸 {size} 过大，请先缩小"),
    "import.image_bomb": (
        "too many pixels to open (decompression bomb limit); shrink it first",
        "像素过多，超出了防解压炸弹的上限，无法打开；请先缩小图片",
    ),
    "import.image_missing": ("file not found", "找不到这个文件"),
    "import.image_format": (
        "format {format} is not accepted; use a PNG, JPEG or WebP",
        "不接受 {format} 格式；请使用 PNG、JPEG 或 WebP",
    ),
    # a file the upload refused before the import (service.uploads.check_upload)
    "import.upload_type": ("type {type} is not accepted; send one of {allowed}", "不接受 {type} 类型的文件；可上传：{allowed}"),
    "import.upload_content": (
        "its content is not a {type} file",
        "文件内容不是 {type} 格式（文件已损坏，或是改了扩展名的其他格式）",
    ),
    "import.caption_not_utf8": (
        "a caption file must be UTF-8 text",
        "标注文件必须是 UTF-8 编码的文本：请用 UTF-8 编码重新保存",
    ),
    "import.caption_too_large": ("over {limit} bytes; a caption is one line", "超过 {limit} 字节；标注应是一行文字"),
    "import.metadata_too_large": (
        "over {limit_mib} MiB; upload the folder as a zip",
        "超过 {limit_mib} MiB；请把文件夹打包成 zip 上传",
    ),
    "import.not_kohya_metadata": (
        "not kohya metadata; upload kohya's meta_*.json or leave it out",
        "不是 kohya 元数据文件：请上传 kohya 的 meta_*.json，或不要上传它",
    ),
    "import.json_not_meta_name": (
        "a .json is read as kohya metadata only under a name holding 'meta' (meta_cap.json, meta_lat.json)",
        "只有名称含“meta”的 .json（如 meta_cap.json、meta_lat.json）才会作为 kohya 元数据读取",
    ),
    "import.disk_full": ("the server's disk is full; try again later", "服务器磁盘已满，请稍后再试"),
    # the notes (data.caption_notes, data.importer)
    "importnote.both_captions": (
        "{count} images had both {read} and {others} captions: read {read}, not {others}; choose {ext} as the"
        " caption file to read it instead",
        "{count} 张图片同时有 {read} 和 {others} 标注文件：读取了 {read}，未读取 {others}（kohya 只读取一种）；"
        "要改读 {ext}，请在“标注文件”中选择它。若要两者都用于训练（如 kohya 的微调），请把它们合并进 meta_*.json"
        "（merge_captions_to_metadata + merge_dd_tags_to_metadata）后导入该文件。",
    ),
    "importnote.chosen_caption_missing": (
        "{count} images had no {ext} caption; their {others} files were not read (caption extension {ext})",
        "{count} 张图片没有 {ext} 标注；它们的 {others} 文件未读取（所选标注文件为 {ext}）。",
    ),
    "importnote.kohya_json_used": (
        "{count} images captioned from {name} (kohya metadata: caption, tags)",
        "{count} 张图片的标注取自 {name}（kohya 元数据：caption、tags）。",
    ),
    "importnote.kohya_json_unused": (
        "{name} was not used for {count} images that had another caption; import {name} itself to train on it",
        "{count} 张已有其他标注的图片没有使用 {name}（kohya 的 caption + tags）；要用它的标注训练，请单独导入 {name}。",
    ),
    "importnote.renamed_files": (
        "{count} images with non-ASCII names stored under ASCII file names ({original} -> {stored})",
        "{count} 张图片的文件名含中文等非 ASCII 字符，已改用 ASCII 文件名保存（{original} → {stored}）；"
        "数据集清单（manifest.json）保留了每个原始文件名。",
    ),
}
