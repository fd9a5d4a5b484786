"""Segmentation at inference time: the online segmenter (first-frame tuning on lucid dreams, then
propagation), frames from a video file or a folder, masks as DAVIS-style indexed PNGs (the
official results layout), overlays like Fig. 3 of the paper as MP4/AVI/GIF.

    from pipeline.inference.segmenter import OnlineSegmenter    # tuning + propagation
    from pipeline.inference.tuning import OnlineConfig          # its settings (``online.*``)
    from pipeline.inference import read_frames_dir, read_mask_png, write_sequence_masks
    from pipeline.inference import write_overlay_video

The segmenter is imported from its module (it needs torch and the model; the file I/O here
does not).
"""

from pipeline.inference.masks import (VOID, MaskIOError, as_ids, as_rgb, davis_palette, encode_mask_png, object_ids,
                    overlay, palette_rgb, read_mask_png, resize_ids, resize_image, save_mask_png)
from pipeline.inference.video import (DEFAULT_FPS, FRAME_SUFFIXES, VIDEO_SUFFIXES, list_frames, read_frames_dir,
                    read_video, write_overlay_video, write_sequence_masks)

__all__ = ["DEFAULT_FPS", "FRAME_SUFFIXES", "VIDEO_SUFFIXES", "VOID", "MaskIOError", "as_ids",
           "as_rgb", "davis_palette", "encode_mask_png", "list_frames", "object_ids", "overlay",
           "palette_rgb", "read_frames_dir", "read_mask_png", "read_video", "resize_ids",
           "resize_image", "save_mask_png", "write_overlay_video", "write_sequence_masks"]
