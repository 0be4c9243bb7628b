"""The compile job and what turns a Config into a model: ``hanasc compile`` and ``hanasc apply``.

- :mod:`~hanasc.compile.pipeline` (the job as its stages) over :mod:`~hanasc.compile.context`, with
  :mod:`~hanasc.compile.references`, :mod:`~hanasc.compile.verify`, :mod:`~hanasc.compile.finetune_stage`
  and the outputs (:mod:`~hanasc.compile.report`, :mod:`~hanasc.compile.report_markdown`,
  :mod:`~hanasc.compile.plots`);
- recovery of a Config's weights: :mod:`~hanasc.recovery.reconstruction` (least-squares refits),
  :mod:`~hanasc.recovery.bias_correction` (refits and bias correction) and fine-tuning
  (:mod:`~hanasc.recovery.finetune` on :mod:`~hanasc.recovery.torch_form` and
  :mod:`~hanasc.recovery.torch_ops`);
- :mod:`~hanasc.compile.apply_pipeline` (``hanasc apply``) and :mod:`~hanasc.compile.onnx_rewrite`
  (architecture choices written back into ONNX).
"""
