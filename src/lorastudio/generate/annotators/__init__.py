"""ControlNet preprocessors (annotators): an image in, a control map out (A1111 extension names)."""
