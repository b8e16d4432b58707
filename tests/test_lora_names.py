"""`lora export | merge` take library names, exports for other tools stay out of studio/loras, and a
missing model is said before the LoRAs its prompts name (the auditor's walk through the docs)."""

from __future__ import annotations


def test_generate_names_a_missing_model_before_the_loras_of_its_prompts(cli, workspace):
    """The docs' `generate --model Kolors --prompts docs/examples/kolors-story.yaml`, with no Kolors model,
    said "LoRA 'kolors-cat' not found"."""
    from pathlib import Path

    story = Path(__file__).resolve().parent.parent / "docs" / "examples" / "kolors-story.yaml"
    for args in (("--prompts", story), ("--prompt", "卡通，一只猫 <lora:kolors-cat:1>")):
        result = cli("generate", "--model", "Kolors", *args, "--steps", "1")
        assert result.exit_code == 2
        assert "model 'Kolors' not found" in result.stderr and "kolors-cat" not in result.stderr
