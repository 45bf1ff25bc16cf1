"""MONAI dictionary transforms that keep every annotation type consistent with the image.

Modules:

- :mod:`dsp_monai.transforms.weak_labels`: derive tags, boxes and points from full masks (``DeriveWeakLabelsd``);
- :mod:`dsp_monai.transforms.geometry`: flips, 90-degree rotations, crops, zoom and padding that move masks, valid
  regions, boxes and points together (``Annotated*d``, ``AddValidMaskd``);
- :mod:`dsp_monai.transforms.views`: the weak / strong view pair of FixMatch-style training (``WeakStrongViewsd``);
- :mod:`dsp_monai.transforms.distance_maps`: per-class point distance-map targets (``PointDistanceMapsd``).

Import the classes from their modules; this package imports nothing eagerly so that ``dsp_monai.ops`` users do not
pay for MONAI.
"""
