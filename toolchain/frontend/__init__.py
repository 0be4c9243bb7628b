"""The frontend: an ONNX file read safely, cleaned and imported into Relax, with its layer table.

- :mod:`~hanasc.frontend.loading`: :func:`load_model` (ONNX file -> checked, cleaned ONNX -> Relax
  IRModule + layer table), on :mod:`~hanasc.frontend.onnx_loader`, :mod:`~hanasc.frontend.onnx_cleaner`,
  :mod:`~hanasc.frontend.relax_import` and :mod:`~hanasc.core.layers`;
- :mod:`~hanasc.frontend.calibration` (activation ranges) and :mod:`~hanasc.frontend.layer_statistics`
  (input patch covariances);
- the data: :mod:`~hanasc.frontend.datasets`, :mod:`~hanasc.frontend.images`, and the models of
  :mod:`~hanasc.frontend.model_zoo` (with the corpus architectures of :mod:`~hanasc.frontend.corpus_nets`).
"""
