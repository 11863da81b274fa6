"""Stand-ins for modules FINN v0.10.1 imports but the front-end steps and estimates never use.

FINN's builder imports, at module level, modules that need hardware tools or FINN's test
dependencies:
- pyverilator (RTL simulation with Verilator; used from step_hw_codegen/rtlsim on, which this
  check does not run): finn.custom_op.fpgadataflow.hwcustomop, finn.util.pyverilator, ...
- torchvision and brevitas_examples (finn.util.test, imported by build_dataflow_steps for its
  verification helper; they would pull torch and brevitas into the FINN venv)
- pytest (finn.util.test again)
Each stand-in is an empty module whose names raise if anything ever calls them, so a step that
did need the real package fails loudly instead of computing something wrong."""
from __future__ import annotations

import sys
import types

STANDINS = {
    "pyverilator": ["PyVerilator"],
    "pyverilator.util": [],
    "pyverilator.util.axi_utils": ["_read_signal", "reset_rtlsim", "rtlsim_multi_io", "toggle_clk"],
    "torchvision": [],
    "torchvision.transforms": [],
    "torchvision.transforms.functional": ["resize", "center_crop"],
    "brevitas_examples": [],
    "brevitas_examples.bnn_pynq": None,  # None: any attribute (finn.util.test maps model names at import)
    "brevitas_examples.imagenet_classification": None,
    "pytest": ["skip"],
}


def _unavailable(module: str, name: str):
    def call(*args, **kwargs):
        raise RuntimeError(f"{module}.{name} is a stand-in (finn_side/standins.py): this FINN step needs "
                           f"the real package, which the FINN check does not install")
    call.__name__ = name
    return call


def install() -> None:
    """Register the stand-ins in sys.modules, unless the real package is importable."""
    import importlib.util

    for name, attrs in STANDINS.items():
        top = name.split(".")[0]
        if name in sys.modules or (top not in sys.modules and importlib.util.find_spec(top) is not None):
            continue
        module = types.ModuleType(name, f"stand-in from {__file__}")
        module.__path__ = []  # a package, so submodules resolve
        if attrs is None:
            module.__getattr__ = lambda attr, _n=name: _unavailable(_n, attr)
        for attr in attrs or []:
            setattr(module, attr, _unavailable(name, attr))
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
