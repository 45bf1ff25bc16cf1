"""MONAI Label app of dsp_monai: segment 2D images with clicks (or volumes, ``--conf dimension 3``), train from
masks, boxes, points and tags kept in the datastore (user guide: docs/label.md).

- :mod:`dsp_monai.label.app`: :class:`~dsp_monai.label.app.DSPLabelApp`, the MONAILabelApp (infer and train tasks
  ``dsp``); :mod:`dsp_monai.label.server`: the server's ASGI app; ``python -m dsp_monai.label start_server``;
- :mod:`dsp_monai.label.annotations`, :mod:`dsp_monai.label.datalist`, :mod:`dsp_monai.label.images`,
  :mod:`dsp_monai.label.refine`, :mod:`dsp_monai.label.settings`: the parts that do not need MONAI Label.

The modules that import MONAI Label (app, datastore, infer, train, server) need the optional extra
(``make label`` or ``pip install -e ".[label]"`` followed by its no-dependency steps, see docs/label.md); importing
this package does not load them.
"""
