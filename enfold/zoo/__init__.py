"""The model zoo: trained models shipped inside the package, usable right after install.

    import enfold.zoo, enfold.runtime
    enfold.zoo.list_models()                   # every shipped model
    session = enfold.runtime.load("noise")  # a name works wherever an artifact path does

``resolve(name_or_path)`` turns a name into its artifact's path (an existing path wins);
``for_task("noise")`` is the shipped model of a task. ``enfold models`` lists them.
"""

from enfold.zoo.registry import (
    ZOO_ENV,
    UnknownModelError,
    ZooModel,
    for_task,
    get,
    list_models,
    names,
    resolve,
    zoo_dir,
)

__all__ = ["ZOO_ENV", "UnknownModelError", "ZooModel", "for_task", "get", "list_models",
           "names", "resolve", "zoo_dir"]
