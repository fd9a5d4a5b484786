"""The private torch API the loader's shared-memory batches rest on
(``pipeline/loading/batching.py::alloc``, used by the buffer pool): ``Tensor._typed_storage()`` and
``TypedStorage._new_shared``. pyproject.toml pins torch for it; a torch upgrade that removes or
changes them fails here, by name, rather than in a DataLoader worker."""

from __future__ import annotations

import pytest
import torch

from pipeline.loading.batching import alloc

FIX = ("pipeline/loading/batching.py::alloc needs another way to allocate an uninitialised "
       "shared-memory tensor on this torch, or keep the torch version pinned in pyproject.toml")


def test_the_private_names_exist():
    base = torch.empty(0, dtype=torch.uint8)
    assert hasattr(base, "_typed_storage"), \
        f"torch {torch.__version__}: Tensor._typed_storage is gone; {FIX}"
    storage = base._typed_storage()
    assert callable(getattr(storage, "_new_shared", None)), \
        f"torch {torch.__version__}: {type(storage).__name__}._new_shared is gone; {FIX}"


@pytest.mark.parametrize("shape,dtype", [((3, 5, 7), torch.uint8), ((2, 4, 6, 3), torch.uint8),
                                         ((4, 9), torch.int32), ((1,), torch.float32)])
def test_alloc_shared_is_shared_memory_of_the_right_size(shape, dtype):
    t = alloc(shape, dtype, shared=True)
    numel = 1
    for n in shape:
        numel *= n
    assert t.is_shared(), f"torch {torch.__version__}: _new_shared no longer allocates in " \
                          f"shared memory; {FIX}"
    assert tuple(t.shape) == shape and t.dtype == dtype and t.is_contiguous(), \
        f"torch {torch.__version__}: a {shape} {dtype} buffer came back as " \
        f"{tuple(t.shape)} {t.dtype}; {FIX}"
    assert t.untyped_storage().nbytes() == numel * t.element_size(), \
        f"torch {torch.__version__}: _new_shared({numel}) gave " \
        f"{t.untyped_storage().nbytes()} bytes, not {numel * t.element_size()}; {FIX}"
    t.fill_(7)  # writable, all of it
    assert int((t == 7).sum()) == numel


def test_alloc_unshared_stays_private():
    assert not alloc((2, 3), shared=False).is_shared()
