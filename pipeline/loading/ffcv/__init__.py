"""The optional FFCV store for the static-image stage (MSRA10K + VOC image samples): its format
(:mod:`~pipeline.loading.ffcv.format`), shard indexing (:mod:`~pipeline.loading.ffcv.index`),
writer (:mod:`~pipeline.loading.ffcv.store`), operations (:mod:`~pipeline.loading.ffcv.ops`)
and loader (:mod:`~pipeline.loading.ffcv.loader`). Importing it needs no FFCV; using it does."""

from pipeline.core.ids_resize import (nearest_indices)
from pipeline.lake.listing import (finished_shards)
from pipeline.loading.decode import (apply_mask_format, decode_mask, MASK_FORMATS, merge_object_ids)
from pipeline.loading.ffcv.format import (decode_mask_record, encode_mask_record, FFCVUnavailable,
                                          FIELD_NAMES, INSTALL_HINT, load_sidecar,
                                          MASK_HEADER_BYTES, MASK_PAD_VALUE, require_ffcv,
                                          sidecar_path, SIDECAR_SUFFIX, STORE_FORMAT,
                                          STORE_VERSION, StoreError)
from pipeline.loading.ffcv.index import (decode_image, IMAGE_MODES, NoFinishedShards,
                                         resize_mask_nearest)
from pipeline.loading.ffcv.loader import (FFCVImageLoader, iter_beton, LoaderThreadDied,
                                          make_ffcv_loader)
from pipeline.loading.ffcv.store import (write_beton)

__all__ = [
    # the writer (this module)
    "IMAGE_MODES", "NoFinishedShards", "decode_image", "nearest_indices", "resize_mask_nearest",
    "write_beton",
    # the format (ffcv_format)
    "FIELD_NAMES", "INSTALL_HINT", "MASK_HEADER_BYTES", "MASK_PAD_VALUE", "SIDECAR_SUFFIX",
    "STORE_FORMAT", "STORE_VERSION", "FFCVUnavailable", "StoreError", "decode_mask_record",
    "encode_mask_record", "load_sidecar", "require_ffcv", "sidecar_path",
    # the loader (ffcv_loader)
    "FFCVImageLoader", "LoaderThreadDied", "iter_beton", "make_ffcv_loader",
    # decoding (decode) and shard listing (shardlist), shared with the WebDataset loader
    "MASK_FORMATS", "apply_mask_format", "decode_mask", "merge_object_ids", "finished_shards",
]
