"""The supervised-positions-only LM head gives the full-logits loss and gradients."""

from __future__ import annotations

import torch

from minigemini.modeling import IGNORE_INDEX
from tests.conftest import image_inputs, prompt_ids, tiny_model


def batch(config):
    ids = torch.tensor(
        [
            prompt_ids(config, [1, 5, 9], [6, 7, 8, 10, 11]),
            prompt_ids(config, [1, 12], [13, 14, 15, 16, 17, 18]),
        ]
    )
    labels = ids.clone()
    labels[:, : config.image_seq_length + 4] = IGNORE_INDEX  # the prompt
    labels[0, -2:] = IGNORE_INDEX  # padding
    return ids, labels, image_inputs(config, 2)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_supervised_head_equals_full_logits_loss_and_gradients():
    model = tiny_model().train()
    ids, labels, images = batch(model.config)
    results = {}
    for full in (True, False):
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, full_logits=full, **images)
        out.loss.backward()
        results[full] = (out.loss.detach(), grads(model), out.logits)
    torch.testing.assert_close(results[False][0], results[True][0], rtol=1e-6, atol=1e-6)
    assert results[True][1].keys() == results[False][1].keys()
    for name, grad in results[True][1].items():
        torch.testing.assert_close(results[False][1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert results[True][2].shape[:2] == ids.shape and results[False][2] is None


def test_defaults_follow_the_mode_and_num_items_in_batch_is_honoured():
    model = tiny_model()
    ids, labels, images = batch(model.config)
    assert model.eval()(input_ids=ids, labels=labels, **images).logits is not None
    train_out = model.train()(input_ids=ids, labels=labels, **images)
    assert train_out.logits is None
    full = model(input_ids=ids, labels=labels, full_logits=True, num_items_in_batch=torch.tensor(40), **images)
    part = model(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(40), **images)
    torch.testing.assert_close(part.loss, full.loss)


def test_no_supervised_token_gives_a_zero_loss_with_a_graph():
    model = tiny_model().train()
    ids = torch.tensor([[1, 5, 6, 7]])
    out = model(input_ids=ids, labels=torch.full_like(ids, IGNORE_INDEX))
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
