"""The UI's tabs, in page order. A tab is one module with `TAB_ID`, `LABEL` (a key of
`ui.i18n.LABELS`) and `build(ctx)`; adding a tab is adding a module and a line here.

Generate comes first: later tabs (PNG info, Extras) wire its "send to" buttons and fill its
controls through `ctx.shared`.
"""

from lorastudio.ui.tabs import datasets, extras, generate, jobs, library, png_info, portrait, settings, train

TABS = (generate, png_info, extras, library, datasets, train, portrait, jobs, settings)

__all__ = ["TABS"]
