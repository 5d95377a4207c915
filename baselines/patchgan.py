"""What image-to-image GAN training shares (Isola et al. 2017, pix2pix; Zhu et al. 2017, CycleGAN): the
70x70 PatchGAN discriminator, the least-squares GAN loss, the 50-image history pool and the weight init,
in junyanz/pytorch-CycleGAN-and-pix2pix's layout (`NLayerDiscriminator` keys `model.<i>.weight`).

Every random draw takes an explicit `torch.Generator`, so a training run can derive it from
(seed, iteration) and resume exactly."""

import torch
from torch import nn


class NLayerDiscriminator(nn.Module):
    """PatchGAN: [N, input_nc, H, W] -> one logit per overlapping patch [N, 1, h, w].

    conv4x4 s2 + LeakyReLU(0.2), then n_layers - 1 conv4x4 s2 + InstanceNorm + LeakyReLU doubling the
    channels (at most 8 * ndf), one conv4x4 s1 + IN + LeakyReLU and a conv4x4 s1 to one channel. With
    n_layers 3 each output sees a 70x70 patch (pix2pix Sec. 3.2.2). InstanceNorm has no affine
    parameters, so the convolutions before it keep their biases (the reference's `use_bias`)."""

    def __init__(self, input_nc=3, ndf=64, n_layers=3):
        super().__init__()
        layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1                    # the last one keeps the size
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=True),
                       nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        self.init_kwargs = dict(input_nc=input_nc, ndf=ndf, n_layers=n_layers)

    def forward(self, x):
        return self.model(x)


def min_size(n_layers):
    """The smallest square input that leaves the PatchGAN a 1x1 output."""
    size = 1
    for _ in range(2):                                           # the two stride-1 convolutions
        size += 1
    for _ in range(n_layers):                                    # stride 2, kernel 4, padding 1
        size = 2 * size
    return size


@torch.no_grad()
def init_weights(net, generator, gain=0.02):
    """networks.init_weights(init_type='normal'): conv weights ~ N(0, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * gain)
            if m.bias is not None:
                m.bias.zero_()
    return net


def lsgan_loss(logits, target_is_real):
    """Least-squares GAN loss (Mao et al. 2017) per sample: mean over the patch map of (D - 1)^2 or D^2 -> [N]."""
    target = 1.0 if target_is_real else 0.0
    return (logits - target).square().flatten(1).mean(dim=1)


class ImagePool:
    """The history of generated images D is shown (Shrivastava et al. 2017, CycleGAN Sec. 7.1): until it holds
    `size` images each new one is stored and returned; then each is returned with probability 1/2, or swapped
    for a stored one drawn uniformly (which it replaces). `state_dict` holds every stored image."""

    def __init__(self, size=50):
        self.size, self.images = size, []

    def query(self, images, generator):
        """images [N, C, H, W] (detached) -> [N, C, H, W]; draws from `generator` only."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=generator)) > 0.5:
                k = int(torch.randint(0, self.size, (), generator=generator))
                out.append(self.images[k].clone())
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self):
        return dict(size=self.size, images=torch.stack(self.images).cpu() if self.images else torch.zeros(0))

    def load_state_dict(self, state, device='cpu'):
        if int(state['size']) != self.size:
            raise ValueError(f'image pool of size {state["size"]} saved, {self.size} configured')
        self.images = [img.to(device) for img in state['images']] if state['images'].numel() else []
