using Segmentation.Models.Encoders;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Training;

/// <summary>
/// The ResNet U-Net written straight on TorchSharp's own layers (<c>nn.Conv2d</c>, <c>nn.BatchNorm2d</c>), with none
/// of ours (no routed convolutions, no kernel check, no precision): the yardstick <see cref="TrainingBenchmark"/> times
/// our model against. Same layers, shapes and parameter count as <c>UNet</c> with that encoder.
/// </summary>
internal sealed class StraightResNetUNet : nn.Module<Tensor, Tensor>
{
    private readonly Sequential stem, layer1, layer2, layer3, layer4, head;
    private readonly MaxPool2d maxpool;
    private readonly ModuleList<Sequential> decoder;
    private readonly int[] skips;

    public StraightResNetUNet(string kind, int inChannels, int classes) : base(nameof(StraightResNetUNet))
    {
        var (counts, bottleneck) = ResNetEncoder.Layout(kind);
        int e = bottleneck ? 4 : 1;
        stem = nn.Sequential(nn.Conv2d(inChannels, 64, 7, stride: 2, padding: 3, bias: false), nn.BatchNorm2d(64),
            nn.ReLU(inplace: true));
        maxpool = nn.MaxPool2d(3, 2, 1);
        long inplanes = 64;
        Sequential Layer(long planes, int blocks, int stride)
        {
            var list = new List<nn.Module<Tensor, Tensor>>();
            for (int b = 0; b < blocks; b++) { list.Add(new Block(inplanes, planes, b == 0 ? stride : 1,
                bottleneck)); inplanes = planes * e; }
            return nn.Sequential(list.ToArray());
        }
        layer1 = Layer(64, counts[0], 1); layer2 = Layer(128, counts[1], 2); layer3 = Layer(256, counts[2],
            2); layer4 = Layer(512, counts[3], 2);
        long[] stages = { 64, 64 * e, 128 * e, 256 * e, 512 * e };
        int[] channels = { 256, 128, 64, 32, 16 };
        skips = new[] { 3, 2, 1, 0, -1 };
        long cin = stages[4];
        var blocks = new List<Sequential>();
        for (int i = 0; i < 5; i++)
        {
            long skip = skips[i] < 0 ? 0 : stages[skips[i]];
            blocks.Add(nn.Sequential(ConvBnRelu(cin + skip, channels[i]), ConvBnRelu(channels[i], channels[i])));
            cin = channels[i];
        }
        decoder = nn.ModuleList(blocks.ToArray());
        head = nn.Sequential(nn.Conv2d(16, classes, 3, padding: 1));
        RegisterComponents();
    }

    private static Sequential ConvBnRelu(long cin, long cout)
        => nn.Sequential(nn.Conv2d(cin, cout, 3, padding: 1, bias: false), nn.BatchNorm2d(cout),
        nn.ReLU(inplace: true));

    public override Tensor forward(Tensor x)
    {
        var f = new Tensor[5];
        f[0] = stem.forward(x);
        f[1] = layer1.forward(maxpool.forward(f[0]));
        f[2] = layer2.forward(f[1]);
        f[3] = layer3.forward(f[2]);
        f[4] = layer4.forward(f[3]);
        var y = f[4];
        for (int i = 0; i < 5; i++)
        {
            y = F.interpolate(y, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest);
            if (skips[i] >= 0) y = cat(new[] { y, f[skips[i]] }, 1);
            y = decoder[i].forward(y);
        }
        return head.forward(y);
    }

    /// <summary>torchvision's basic block or bottleneck, on TorchSharp's layers.</summary>
    private sealed class Block : nn.Module<Tensor, Tensor>
    {
        private readonly Sequential body;
        private readonly Sequential? downsample;

        public Block(long inplanes, long planes, int stride, bool bottleneck) : base(nameof(Block))
        {
            long outplanes = bottleneck ? planes * 4 : planes;
            body = bottleneck
                ? nn.Sequential(nn.Conv2d(inplanes, planes, 1, bias: false), nn.BatchNorm2d(planes),
                nn.ReLU(inplace: true),
                    nn.Conv2d(planes, planes, 3, stride: stride, padding: 1, bias: false), nn.BatchNorm2d(planes),
                        nn.ReLU(inplace: true),
                    nn.Conv2d(planes, outplanes, 1, bias: false), nn.BatchNorm2d(outplanes))
                : nn.Sequential(nn.Conv2d(inplanes, planes, 3, stride: stride, padding: 1, bias: false),
                nn.BatchNorm2d(planes), nn.ReLU(inplace: true),
                    nn.Conv2d(planes, planes, 3, padding: 1, bias: false), nn.BatchNorm2d(planes));
            downsample = stride != 1 || inplanes != outplanes
                ? nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride: stride, bias: false),
                nn.BatchNorm2d(outplanes)) : null;
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => F.relu(body.forward(x).add_(downsample?.forward(x) ?? x),
            inplace: true);
    }
}
