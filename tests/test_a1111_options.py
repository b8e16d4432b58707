"""api.a1111_options: A1111 options are per user and checked before they are kept."""

from __future__ import annotations

import pytest


def test_one_users_a1111_options_do_not_leak_to_another(tiny_workspace):
    """Alice's model, CLIP skip and other options are hers: Bob keeps the server's, and a second
    look-up of the studio's options (another app, a script) finds the same per-user values."""
    from lorastudio.api.a1111_options import model_title, options_of
    from lorastudio.errors import InvalidRequest
    from lorastudio.service.studio import Studio, StudioSettings

    studio = Studio(tiny_workspace, StudioSettings(model="tiny-sd15", options={"samples_format": "png"}))
    try:
        options = options_of(studio)
        options.update(
            {"sd_model_checkpoint": model_title(studio, "tiny-sdxl"), "CLIP_stop_at_last_layers": 2}, user="alice"
        )
        assert options_of(studio) is options
        assert options.model_for("alice") == "tiny-sdxl" and options.model_for("bob") == "tiny-sd15"
        assert options.options("alice") == {"samples_format": "png", "CLIP_stop_at_last_layers": 2}
        assert options.options("bob") == {"samples_format": "png"}
        with pytest.raises(InvalidRequest, match="CLIP_stop_at_last_layers"):
            options.update({"CLIP_stop_at_last_layers": 40}, user="bob")
        assert options.options("bob") == {"samples_format": "png"}  # a refused value is not kept
        assert studio.model == "tiny-sd15"  # nobody's options move the server's default
    finally:
        studio.close()
