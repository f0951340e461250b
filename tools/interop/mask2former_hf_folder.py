#!/usr/bin/env python3
"""A whole Mask2Former (transformers' Mask2FormerForUniversalSegmentation on a SwinBackbone) written as a Hugging Face
model folder, with the reference's own predictions for one image: the fixture `segment import --from hf-mask2former`
is tested against.

    /usr/bin/python3 tools/interop/mask2former_hf_folder.py tests/fixtures/mask2former/hf

The model is small and random (a width-8 Swin of window 4, pixel decoder and transformer 32 wide, 2 deformable layers,
decoder_layers 4, 8 queries, 3 classes) but not trivial: the norms are perturbed so that a swapped name shows, and the
class predictor is scaled so that the queries do not collapse onto one class. It is built from the two references
(swin_reference.py, mask2former_reference.py, each written from transformers' modeling files), its state dict under
transformers' names (model.pixel_level_module.encoder., model.pixel_level_module.decoder., model.transformer_module.,
class_predictor.). Writes config.json (a Mask2FormerConfig with its backbone_config), pytorch_model.bin,
preprocessor_config.json, image.png (45 x 61, RGB: five coloured regions under noise) and expected.pth: the last prediction's class_queries_logits and
masks_queries_logits, the semantic map (post_process_semantic_segmentation at the image's size) and the instance and
panoptic maps at threshold 0 (the panoptic at overlap 0.8 and 0.1; make_mask2former_decoding.py's ports of transformers' post-processing).

Debian's python3-torch (1.13) and python3-skimage are enough; transformers itself is not needed.
"""
import importlib.util, json, math, os, sys
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


swin = load("swin_reference", os.path.join(HERE, "swin_reference.py"))
m2f = load("mask2former_reference", os.path.join(HERE, "mask2former_reference.py"))
decoding = load("make_mask2former_decoding", os.path.join(HERE, "..", "fixtures", "make_mask2former_decoding.py"))

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build():
    torch.manual_seed(39)
    backbone_config = dict(model_type="swin", embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                           window_size=4, num_channels=3, patch_size=4, mlp_ratio=4.0, qkv_bias=True,
                           hidden_act="gelu", layer_norm_eps=1e-5, drop_path_rate=0.0, image_size=224,
                           out_features=["stage1", "stage2", "stage3", "stage4"])
    dim, heads, queries, classes = 32, 4, 8, 3
    backbone = swin.SwinBackbone(backbone_config).eval()
    channels = [8 * 2 ** i for i in range(4)]
    pixel = m2f.PixelDecoder(channels, dim=dim, heads=heads, ffn=64, layers=2, mask_dim=dim).eval()
    transformer = m2f.TransformerModule(dim, heads, ffn=64, decoder_layers=4, queries=queries, mask_dim=dim).eval()
    class_predictor = nn.Linear(dim, classes + 1)
    state = {}
    for prefix, module in (("model.pixel_level_module.encoder.", backbone),
                           ("model.pixel_level_module.decoder.", pixel),
                           ("model.transformer_module.", transformer), ("class_predictor.", class_predictor)):
        state.update({prefix + k: v for k, v in module.state_dict().items()})
    with torch.no_grad():
        for name, p in state.items():
            if not p.is_floating_point():
                continue
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif p.dim() == 1 and "level_embed" not in name:
                p.copy_(0.2 * torch.randn_like(p))
            elif "relative_position_bias_table" in name or "embed" in name or "queries" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
        for layer in pixel.encoder.layers:  # offsets of a few pixels: samples between pixels and past the edges
            layer.self_attn.sampling_offsets.weight.mul_(3)
            layer.self_attn.sampling_offsets.bias.mul_(10)
        for layer in transformer.decoder.layers:  # each query keeps its own: the queries do not collapse
            for linear in (layer.cross_attn.out_proj, layer.self_attn.out_proj, layer.fc2):
                linear.weight.mul_(0.3)
        class_predictor.weight.mul_(6)
        class_predictor.bias.zero_()
        transformer.decoder.mask_predictor.mask_embedder._modules["2"]._modules["0"].weight.mul_(0.05)  # masks not all saturated
    config = dict(model_type="mask2former", architectures=["Mask2FormerForUniversalSegmentation"],
                  backbone_config=backbone_config, feature_size=dim, mask_feature_size=dim, hidden_dim=dim,
                  encoder_feedforward_dim=64, activation_function="relu", encoder_layers=2, decoder_layers=4,
                  num_attention_heads=heads, dropout=0.0, dim_feedforward=64, pre_norm=False,
                  enforce_input_projection=False, common_stride=4, ignore_value=255, num_queries=queries,
                  no_object_weight=0.1, class_weight=2.0, mask_weight=5.0, dice_weight=5.0, train_num_points=12544,
                  oversample_ratio=3.0, importance_sample_ratio=0.75, init_std=0.02, init_xavier_std=1.0,
                  use_auxiliary_loss=True, feature_strides=[4, 8, 16, 32], output_auxiliary_logits=None,
                  id2label={"0": "background", "1": "cell", "2": "debris"},
                  label2id={"background": 0, "cell": 1, "debris": 2})
    return backbone, pixel, transformer, class_predictor, state, config


def main(out):
    backbone, pixel, transformer, class_predictor, state, config = build()
    os.makedirs(out, exist_ok=True)
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=1)
    torch.save(state, os.path.join(out, "pytorch_model.bin"))
    json.dump(dict(image_processor_type="Mask2FormerImageProcessor", do_resize=False, do_rescale=True,
                   rescale_factor=1 / 255, do_normalize=True, image_mean=MEAN, image_std=STD, ignore_index=255,
                   size_divisor=32, num_labels=3), open(os.path.join(out, "preprocessor_config.json"), "w"), indent=1)
    g = torch.Generator().manual_seed(40)  # five coloured regions under noise: masks that follow them
    image = (torch.rand(45, 61, 3, generator=g) * 60).round()
    for (rows, cols), colour in zip([((0, 20), (0, 30)), ((0, 20), (30, 61)), ((20, 45), (0, 20)),
                                     ((20, 45), (20, 45)), ((25, 40), (45, 61))],
                                    [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]):
        image[rows[0]:rows[1], cols[0]:cols[1]] += torch.tensor(colour, dtype=torch.float32)
    image = image.clamp(0, 255).to(torch.uint8)
    from skimage import io
    io.imsave(os.path.join(out, "image.png"), image.numpy(), check_contrast=False)
    x = (image.permute(2, 0, 1).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad():
        maps = backbone(x[None])
        trace = pixel(maps, {})
        multi = [trace[f"multi_scale{i}"] for i in range(3)]
        result = transformer(multi, trace["mask_features"], class_predictor, {})
    last = len(transformer.decoder.layers)
    classes, masks = result[f"classes{last}"], result[f"masks{last}"]
    # post_process_semantic_segmentation at the image's size
    resized = F.interpolate(masks, size=(45, 61), mode="bilinear", align_corners=False)
    semantic = torch.einsum("bqc,bqhw->bchw", classes.softmax(-1)[..., :-1], resized.sigmoid()).argmax(1)[0]
    instance, instance_segments = decoding.instances(classes[0], masks[0], (45, 61), threshold=0.0)
    panoptic, panoptic_segments = decoding.panoptic(classes[0], masks[0], (45, 61), threshold=0.0, fuse=[0])
    # random queries overlap: at transformers' overlap 0.8 few keep their own pixels, at 0.1 several (one fused)
    loose, loose_segments = decoding.panoptic(classes[0], masks[0], (45, 61), threshold=0.0, overlap=0.1, fuse=[0])
    torch.save({"class_queries_logits": classes.contiguous(), "masks_queries_logits": masks.contiguous(),
                "semantic": semantic.float(), "instance": instance.float(), "panoptic": panoptic.float(),
                "panoptic_overlap_0.1": loose.float()}, os.path.join(out, "expected.pth"))
    print(f"{sum(v.numel() for v in state.values())} parameters; masks {'x'.join(map(str, masks.shape))}; classes "
          f"in the semantic map {sorted(set(semantic.flatten().tolist()))}; {len(instance_segments)} instances, "
          f"{len(panoptic_segments)} panoptic segments at threshold 0, {len(loose_segments)} at overlap 0.1")


if __name__ == "__main__":
    main(sys.argv[1])
