"""Lucid-dream augmentation: many (image, mask) training pairs from ONE annotated frame.

STCNN fine-tunes its spatial segmentation branch online on the first frame of each test video,
augmented with the "lucid dream" strategy of Khoreva et al. ("Lucid Data Dreaming for Video Object
Segmentation", IJCV 2019), in five steps (STCNN paper, Sec. 3.3): illumination changing,
foreground/background splitting, object motion simulating, camera view changing and
foreground/background merging. Like STCNN (and unlike Khoreva et al.) no optical flow is made.
The authors' generator made 100 such images per sequence. This module is our own implementation
of the five steps with OpenCV + NumPy; it does not reproduce the authors' code.

Mask convention: uint8 ``[H, W]``, 0 background, 1..254 object ids, 255 void / ignore. A binary
DAVIS-2016 mask (0/255, the object being 255) must first be turned into ids:
``(mask > 0).astype(np.uint8)``.

The steps of one dream (:func:`lucid_dream`), in the paper's order (the camera runs last):

1. **Illumination** (``illumination``): the whole frame goes through HSV, with a random hue
   rotation (up to ``illumination * 20`` degrees), saturation and value gains
   (``exp(U(-s, s))``) and a smooth linear lighting gradient across the frame in a random
   direction (value gain ``exp(g * t)``, ``g ~ U(-s, s)``, ``t`` in [-1, 1] along the direction).
2. **Foreground/background split** (``inpaint_*``): every object (ids 1..254) is cut out and the
   hole, the object mask dilated by ``inpaint_dilate`` of the image size (so that the objects'
   blurred edges go too), is filled with ``cv2.inpaint`` (Telea, or Navier-Stokes) at a reduced
   resolution (longest side ``inpaint_max_side``) and upsampled back into the hole only; the
   pixels outside the hole stay exact. The authors used PatchMatch inpainting, which copies
   texture; Telea/NS diffuse colour, so large holes come out smooth (blurry) rather than
   textured. Void pixels are not cut: they belong to the static background and keep their label
   (also where the dilated hole covers them: their image is inpainted, their label stays 255).
3. **Object motion** (``max_shift``, ``scale``, ``max_rotate_deg``, ``deform``): each object gets
   its own random similarity transform about its centroid (shift up to ``max_shift`` of the image
   width/height, scale from ``scale``, rotation up to ``max_rotate_deg``) composed with a smooth
   non-rigid thin-plate-spline deformation: ``deform_points`` x ``deform_points`` jittered
   control points on the object's bounding box are displaced by ``N(0, deform * size)``
   (``size``: the longer bounding-box side) and the TPS interpolates the displacement everywhere.
   The mapping is built backwards (output pixel -> source position) and the image layer, its
   feather alpha and its mask are sampled with the *same* map: image and alpha bilinear, mask
   nearest neighbour, so ids are never blended and the mask is the moved object exactly.
   Each object carries a thin ring of its own surroundings (``feather`` of the image size, only
   pixels closer to it than to any other object; elsewhere the inpainted background), with
   alpha falling from 1 at the object edge to 0 across the ring: that is the soft border.
   Void pixels inside that ring travel with the object (as void).
4. **Camera view change** (``camera_*``): a global similarity transform about the image centre
   plus a small perspective component (each corner moved by up to ``camera_perspective`` of the
   size) is applied to the merged image (bilinear) and mask (nearest). Pixels that come from
   outside the frame get mask 255 (void) and, in the image, the reflected inpainted background
   (so no mirrored ghost of an object appears there).
5. **Foreground/background merge** (``blend``): the moved objects are pasted onto the inpainted
   background in a random depth order (a later object occludes an earlier one, and the mask shows
   only what is visible). ``"feather"`` alpha-blends the ring; ``"seamless"`` additionally runs
   Poisson blending (``cv2.seamlessClone``, as the authors did) over each pasted object, which also
   shifts the object's colours towards its new surroundings. The mask stays hard either way.
   (The camera of step 4 acts on the merged result, so it is applied after step 5.)

Visibility: an object must keep at least ``min_visible`` of its original area in the final mask
(occlusion, leaving the frame); otherwise the motion and camera are drawn again, up to
``max_tries`` times; after that the draw in which the least visible object was most visible is
kept. Illumination is drawn once per dream.

Switching off: every step is off at 0 (``scale``/``camera_scale`` at ``(1, 1)``) and then changes
nothing. With all object motion off, no object moves relative to the scene, so the split and merge
are skipped (re-pasting unmoved objects would only blur their borders): with everything off the
output is the input, byte for byte. The random draws do not depend on which steps are off (for
the first draw of motion and camera; a ``min_visible`` redraw can of course differ).

Determinism: one ``np.random.default_rng(seed)`` per dream draws everything, in a fixed order and
count; the OpenCV calls used are deterministic whatever their thread count (each output pixel is
computed independently), so the same inputs, config and seed give byte-identical outputs.
:func:`lucid_dream_pairs` and :class:`LucidDreamDataset` give sample ``i`` the seed
:func:`dream_seed` ``(seed, i)``.

Cost (one core, 854x480): about 0.1 s per dream with ``blend="feather"``, 0.15-0.2 s with
``"seamless"``; about 10 ms at 64x64 and 15 ms at 128x128.

The package, one step or job per module: :mod:`~pipeline.train.lucid.config`,
:mod:`~pipeline.train.lucid.background` (steps 1-2), :mod:`~pipeline.train.lucid.deform`
(step 3), :mod:`~pipeline.train.lucid.camera` (step 4), :mod:`~pipeline.train.lucid.compose`
(step 5), :mod:`~pipeline.train.lucid.dream` (the five in order), :mod:`~pipeline.train.lucid.dataset`,
:mod:`~pipeline.train.lucid.grid` (visualisation).
"""

from pipeline.train.lucid.config import LucidDreamConfig, dream_seed
from pipeline.train.lucid.dataset import LucidDreamDataset
from pipeline.train.lucid.dream import lucid_dream, lucid_dream_pairs
from pipeline.train.lucid.grid import example_grid, overlay_mask, save_example_grid

__all__ = ["LucidDreamConfig", "LucidDreamDataset", "dream_seed", "example_grid", "lucid_dream",
           "lucid_dream_pairs", "overlay_mask", "save_example_grid"]
