import torch
import torch.nn.functional as F

from minigemini.encoders import HighResEncoder, LowResEncoder, freeze_encoder
from tests.conftest import tiny_config


def test_low_res_features_are_selected_layer_without_cls():
    torch.manual_seed(0)
    config = tiny_config()
    encoder = LowResEncoder(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    features = encoder(pixels)
    assert features.shape == (2, 16, 32)
    hidden = encoder.model(pixel_values=pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(features, hidden[-2][:, 1:])


def test_low_res_full_strategy_keeps_cls():
    config = tiny_config(vision_feature_select_strategy="full", vision_feature_layer=-1)
    encoder = LowResEncoder(config).eval()
    assert encoder(torch.randn(1, 3, 32, 32)).shape == (1, 17, 32)


def test_high_res_map_fuses_all_stages_at_stem_stride():
    torch.manual_seed(0)
    config = tiny_config()
    encoder = HighResEncoder(config).eval()
    pixels = torch.randn(2, 3, 64, 64)
    fused = encoder(pixels)
    assert fused.shape == (2, 8 + 16 + 24 + 32, 16, 16)
    stages = encoder.convnext(pixels, output_hidden_states=True).hidden_states[1:]
    expected = torch.cat(
        [stages[0]] + [F.interpolate(s, size=(16, 16), mode="bilinear", align_corners=False) for s in stages[1:]], 1
    )
    torch.testing.assert_close(fused, expected)


def test_freeze_turns_off_gradients_and_drop_path():
    torch.manual_seed(0)
    config = tiny_config(
        vision_aux_config={
            "model_type": "convnext",
            "hidden_sizes": [8, 16, 24, 32],
            "depths": [1, 1, 2, 1],
            "drop_path_rate": 0.9,
        }
    )
    encoder = HighResEncoder(config).train()
    pixels = torch.randn(1, 3, 64, 64)
    assert not torch.equal(encoder(pixels), encoder(pixels)), "drop-path should be random while trainable"
    freeze_encoder(encoder)
    encoder.train()  # the Trainer puts every module in train mode
    assert not any(p.requires_grad for p in encoder.parameters())
    assert torch.equal(encoder(pixels), encoder(pixels))
