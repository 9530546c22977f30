"""MODNet (Ke et al., AAAI 2022) in PyTorch, laid out so the official checkpoint
`modnet_photographic_portrait_matting.ckpt` loads key for key.

The layout follows the official repository: its own MobileNetV2 (`backbone.model.features.N`,
not torchvision's), IBNorm (BatchNorm on the first half of the channels, affine-free
InstanceNorm on the rest), an SE block without biases, and the low-resolution branch holding
the *same* backbone object, which is why a state_dict lists every backbone tensor twice
(`backbone.*` and `lr_branch.backbone.*`). The training heads `lr_branch.conv_lr` and
`hr_branch.conv_hr` exist so real checkpoints load; inference never runs them.

`MODNet.forward(img)` is the inference graph: a normalised RGB batch [B, 3, H, W] (H and W
multiples of 32) in, the alpha matte [B, 1, H, W] in [0, 1] out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HR_CHANNELS = 32
# MobileNetV2 stages as (expansion t, output channels c, repeats n, first stride s).
_MBV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
# Channels of the features MODNet taps at strides 2, 4, 8, 16, 32.
ENC_CHANNELS = (16, 24, 32, 96, 1280)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _down(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=1 / factor, mode="bilinear", align_corners=False)


class InvertedResidual(nn.Module):
    """MobileNetV2 block; `conv` indices must stay 0,1,3,4[,6,7] to match checkpoint keys."""

    def __init__(self, inp: int, oup: int, stride: int, expansion: int):
        super().__init__()
        hidden = round(inp * expansion)
        self.use_res_connect = stride == 1 and inp == oup
        depthwise = [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                     nn.ReLU6(inplace=True)]
        project = [nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        expand = [] if expansion == 1 else [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden),
                                            nn.ReLU6(inplace=True)]
        self.conv = nn.Sequential(*expand, *depthwise, *project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _conv_bn_relu6(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup),
                         nn.ReLU6(inplace=True))


class MobileNetV2(nn.Module):
    """The 19 feature stages only (the official backbone is built without a classifier)."""

    def __init__(self, in_channels: int = 3, last_channel: int = 1280):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, 3, 2)]
        channels = 32
        for t, c, n, s in _MBV2_STAGES:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(_conv_bn_relu6(channels, last_channel, 1, 1))
        self.features = nn.Sequential(*layers)


class MobileNetV2Backbone(nn.Module):
    """Wraps the network as `.model` (so keys read `backbone.model.features.N`) and returns
    the features after stages 1, 3, 6, 13 and 18 (strides 2, 4, 8, 16, 32)."""

    taps = (1, 3, 6, 13, 18)

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.model = MobileNetV2(in_channels)
        self.enc_channels = list(ENC_CHANNELS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.model.features):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return feats


class IBNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bnorm_channels = channels // 2
        self.inorm_channels = channels - self.bnorm_channels
        self.bnorm = nn.BatchNorm2d(self.bnorm_channels, affine=True)
        self.inorm = nn.InstanceNorm2d(self.inorm_channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.bnorm_channels
        return torch.cat((self.bnorm(x[:, :c].contiguous()), self.inorm(x[:, c:].contiguous())), 1)


class Conv2dIBNormRelu(nn.Module):
    def __init__(self, inp: int, oup: int, kernel: int, stride: int = 1, padding: int = 0,
                 with_ibn: bool = True, with_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(inp, oup, kernel, stride=stride, padding=padding, bias=True)]
        if with_ibn:
            layers.append(IBNorm(oup))
        if with_relu:
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _conv3(inp: int, oup: int) -> Conv2dIBNormRelu:
    return Conv2dIBNormRelu(inp, oup, 3, padding=1)


def _head(inp: int, kernel: int, stride: int = 1) -> Conv2dIBNormRelu:
    """A bare conv to one channel (the logits before a sigmoid)."""
    return Conv2dIBNormRelu(inp, 1, kernel, stride=stride, padding=kernel // 2, with_ibn=False, with_relu=False)


class SEBlock(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return x * self.fc(self.pool(x).view(b, c)).view(b, c, 1, 1)


class LRBranch(nn.Module):
    """Semantic (low-resolution) branch: backbone -> SE -> two 5x5 convs at 1/16 and 1/8."""

    def __init__(self, backbone: MobileNetV2Backbone):
        super().__init__()
        enc = backbone.enc_channels
        self.backbone = backbone
        self.se_block = SEBlock(enc[4], reduction=4)
        self.conv_lr16x = Conv2dIBNormRelu(enc[4], enc[3], 5, padding=2)
        self.conv_lr8x = Conv2dIBNormRelu(enc[3], enc[2], 5, padding=2)
        self.conv_lr = _head(enc[2], 3, stride=2)  # training-only semantic head

    def forward(self, img: torch.Tensor):
        enc2x, enc4x, _, _, enc32x = self.backbone(img)
        lr16x = self.conv_lr16x(_up2(self.se_block(enc32x)))
        lr8x = self.conv_lr8x(_up2(lr16x))
        return lr8x, enc2x, enc4x


class HRBranch(nn.Module):
    """Detail (high-resolution) branch; ends at 1/2 resolution in inference."""

    def __init__(self, hr: int, enc):
        super().__init__()
        self.tohr_enc2x = Conv2dIBNormRelu(enc[0], hr, 1)
        self.conv_enc2x = Conv2dIBNormRelu(hr + 3, hr, 3, stride=2, padding=1)
        self.tohr_enc4x = Conv2dIBNormRelu(enc[1], hr, 1)
        self.conv_enc4x = _conv3(2 * hr, 2 * hr)
        self.conv_hr4x = nn.Sequential(_conv3(3 * hr + 3, 2 * hr), _conv3(2 * hr, 2 * hr), _conv3(2 * hr, hr))
        self.conv_hr2x = nn.Sequential(_conv3(2 * hr, 2 * hr), _conv3(2 * hr, hr), _conv3(hr, hr), _conv3(hr, hr))
        self.conv_hr = nn.Sequential(_conv3(hr + 3, hr), _head(hr, 1))  # training-only detail head

    def forward(self, img, enc2x, enc4x, lr8x):
        img2x, img4x = _down(img, 2), _down(img, 4)
        enc2x = self.tohr_enc2x(enc2x)
        hr4x = self.conv_enc2x(torch.cat((img2x, enc2x), dim=1))
        hr4x = self.conv_enc4x(torch.cat((hr4x, self.tohr_enc4x(enc4x)), dim=1))
        hr4x = self.conv_hr4x(torch.cat((hr4x, _up2(lr8x), img4x), dim=1))
        return self.conv_hr2x(torch.cat((_up2(hr4x), enc2x), dim=1))


class FusionBranch(nn.Module):
    def __init__(self, hr: int, enc):
        super().__init__()
        self.conv_lr4x = Conv2dIBNormRelu(enc[2], hr, 5, padding=2)
        self.conv_f2x = _conv3(2 * hr, hr)
        self.conv_f = nn.Sequential(_conv3(hr + 3, hr // 2), _head(hr // 2, 1))

    def forward(self, img, lr8x, hr2x):
        lr2x = _up2(self.conv_lr4x(_up2(lr8x)))
        f2x = self.conv_f2x(torch.cat((lr2x, hr2x), dim=1))
        return torch.sigmoid(self.conv_f(torch.cat((_up2(f2x), img), dim=1)))


class MODNet(nn.Module):
    def __init__(self, in_channels: int = 3, hr_channels: int = HR_CHANNELS):
        super().__init__()
        self.backbone = MobileNetV2Backbone(in_channels)
        self.lr_branch = LRBranch(self.backbone)
        self.hr_branch = HRBranch(hr_channels, self.backbone.enc_channels)
        self.f_branch = FusionBranch(hr_channels, self.backbone.enc_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: Kaiming-uniform convs with zero bias, unit/zero norms;
        the SE block's Linear layers keep PyTorch's default."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=0, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        lr8x, enc2x, enc4x = self.lr_branch(img)
        hr2x = self.hr_branch(img, enc2x, enc4x, lr8x)
        return self.f_branch(img, lr8x, hr2x)


#: key prefixes of the training-only heads: loaded when present, never required
TRAINING_HEADS = ("lr_branch.conv_lr.", "hr_branch.conv_hr.")
#: the low-resolution branch's alias of the shared backbone
SHARED_ALIAS = ("lr_branch.backbone.", "backbone.")
