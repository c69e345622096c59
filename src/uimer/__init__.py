"""uimer: train NLP models to look where they should (interpretation-method alignment with gold rationales).

The public API, for your own training code (see the README, "Use as a library"):

- `Aligner(method, alpha, **options)`: `.prepare(train, tokenizer, seed, model=...)`, `aligner(model, batch)` ->
  `AlignmentOutput` (loss = L_task + alpha * L_int, one forward), `.loss(model, batch)` -> L_int,
  `.attribute(model, batch)`, and for DM `.fit_extractor(model, train)` / `.load_extractor(path)`;
- `alignment_loss(model, batch, method, **options)`: L_int of one batch, functional form;
- `METHODS`, `method_names(family=None)`: the registered methods;
- data: `encode_with_rationales` (word flags or character spans -> piece mask), `RationaleCollator`, `pop_batch`;
- models: `adapt`, `use_eager_attention`, `AttributableModel`; `export_hf_classifier`, `export_saved_model`;
- `UimerTrainer`, `DevSelection`: the `transformers.Trainer` integration (needs `accelerate`: `pip install uimer[hf]`).

Names load on first use, so `import uimer` stays cheap (torch and transformers load only when needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Aligner": "uimer.api",
    "AlignmentOutput": "uimer.api",
    "alignment_loss": "uimer.api",
    "method_names": "uimer.api",
    "as_batch": "uimer.api",
    "METHODS": "uimer.interpret",
    "Attribution": "uimer.interpret",
    "create_method": "uimer.interpret",
    "Batch": "uimer.data.encoding",
    "encode_with_rationales": "uimer.data.alignment",
    "RationaleCollator": "uimer.data.collator",
    "pop_batch": "uimer.data.collator",
    "adapt": "uimer.models.adapters",
    "use_eager_attention": "uimer.models.adapters",
    "AttributableModel": "uimer.models.protocol",
    "export_hf_classifier": "uimer.models.export",
    "export_saved_model": "uimer.models.export",
    "UimerTrainer": "uimer.hf",
    "DevSelection": "uimer.hf",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'uimer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from uimer.api import Aligner, AlignmentOutput, alignment_loss, as_batch, method_names  # noqa: F401
    from uimer.data.alignment import encode_with_rationales  # noqa: F401
    from uimer.data.collator import RationaleCollator, pop_batch  # noqa: F401
    from uimer.data.encoding import Batch  # noqa: F401
    from uimer.hf import DevSelection, UimerTrainer  # noqa: F401
    from uimer.interpret import METHODS, Attribution, create_method  # noqa: F401
    from uimer.models.adapters import adapt, use_eager_attention  # noqa: F401
    from uimer.models.export import export_hf_classifier, export_saved_model  # noqa: F401
    from uimer.models.protocol import AttributableModel  # noqa: F401
