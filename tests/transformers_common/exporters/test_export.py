"""Stand-in (ours, not transformers') for ``tests/exporters/test_export.py``, which the 5.23.0 sdist does not carry:
``ExportTesterMixin``, the base of ``ModelTesterMixin``, with one check: every model class exports with
``torch.export`` and the exported program computes what the eager model computes."""

import torch


class ExportTesterMixin:
    test_torch_exportable = True

    def test_torch_export(self):
        if not self.test_torch_exportable:
            self.skipTest(reason="test_torch_exportable is False for this model")
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            inputs = self._prepare_for_class(inputs_dict, model_class)
            with torch.no_grad():
                expected = model(**inputs)
                program = torch.export.export(model, args=(), kwargs=inputs, strict=False)
                got = program.module()(**inputs)
            for key in ("last_hidden_state", "logits"):
                if key in expected:
                    torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-5)
