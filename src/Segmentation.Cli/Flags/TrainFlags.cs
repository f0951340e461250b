using System.Globalization;
using System.CommandLine;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Cli;

/// <summary>The flags of <c>segment train</c>.</summary>
internal sealed class TrainFlags
{
    public readonly Option<string> Data = new Option<string>("--data") { Description =
        "Folder with images/ and masks/ (or train/ and val/), or builtin:shapes.", DefaultValueFactory = _
            => "builtin:shapes" };
    public readonly Option<string?> Val = new Option<string?>("--val") { Description =
        "Validation folder (images/ and masks/)." };
    public readonly Option<double?> ValSplit = new Option<double?>("--val-split") { Description =
        "Share of --data held out for validation when there is no validation folder (default 0.2)." };
    public readonly Option<int?> SplitSeed = new Option<int?>("--split-seed") { Description =
        "Seed of the --val-split hold-out (default: --seed, which then changes the validation images too): give it to "
            + "compare seeds on one split." };
    public readonly Option<int?> InChannels = new Option<int?>("--in-channels") { Description =
        "Image channels fed to the model (default: 1 for gray data, else 3)." };
    public readonly Option<int?> Epochs = new Option<int?>("--epochs") { Description =
        "Epochs (default 40; shapes: 12)." };
    public readonly Option<int?> Batch = new Option<int?>("--batch-size") { Description =
        "Batch size (default 4; shapes: 8)." };
    public readonly Option<string?> Crop = new Option<string?>("--crop") { Description =
        "Random training crop HxW, after random scaling (e.g. 256x256)." };
    public readonly Option<string?> Size = new Option<string?>("--size") { Description =
        "Resize every image to HxW first." };
    public readonly Option<double?> Lr = new Option<double?>("--lr") { Description =
        "Base learning rate, the decoder's and head's (default: the architecture's recipe: unet 1e-3, shapes 3e-3; "
            + "segformer 6e-4, its encoder at 6e-5 when pretrained)." };
    public readonly Option<string?> Optimizer = new Option<string?>("--optimizer") { Description =
        "adamw or sgd (default: the recipe's, adamw)." };
    public readonly Option<string?> Schedule = new Option<string?>("--schedule") { Description =
        "poly, cosine or constant, after a linear warm-up (default: the recipe's, poly)." };
    public readonly Option<double?> PolyPower = new Option<double?>("--poly-power") { Description =
        "The poly schedule's power (default: the recipe's: unet 0.9, segformer 1.0)." };
    public readonly Option<double?> Warmup = new Option<double?>("--warmup") { Description =
        "Warm-up share of all steps (default: the recipe's, 0.05)." };
    public readonly Option<double?> WeightDecay = new Option<double?>("--weight-decay") { Description =
        "Weight decay (default: the recipe's: unet 1e-4, segformer 0.01)." };
    public readonly Option<double?> Clip = new Option<double?>("--clip") { Description =
        "Clip the gradient norm to this." };
    public readonly Option<double?> Ema = new Option<double?>("--ema") { Description =
        "Validate and save an exponential moving average of the weights with this decay, e.g. 0.995 (the first "
            + "steps warm it up; resuming keeps both). Default: none (measured equal on DSB2018, docs/plan.md), or "
            + "plan.json's WeightAverageDecay." };
    public readonly Option<int> Accumulate = new Option<int>("--accumulate") { Description =
        "Batches per optimiser step.", DefaultValueFactory = _ => 1 };
    public readonly Option<string?> Loss = new Option<string?>("--loss") { Description = string.Join("; ",
        LossRegistry.All.Select(l => $"{l.Name}: {l.Description}")) + " (default ce; shapes: ce+dice)." };
    public readonly Option<string> ClassWeights = new Option<string>("--class-weights") { Description =
        "none, median-frequency or inverse-frequency (computed from the training masks).", DefaultValueFactory = _
            => "none" };
    public readonly Option<double> Smoothing = new Option<double>("--label-smoothing") { DefaultValueFactory = _ => 0 };
    public readonly Option<double> FocalGamma = new Option<double>("--focal-gamma") { Description =
        "The focal loss's exponent (--loss focal; 0 is cross-entropy).", DefaultValueFactory = _ => 2.0 };
    public readonly Option<bool> NoAugment = new Option<bool>("--no-augment") { Description =
        "No random scale, flips or colour jitter." };
    public readonly Option<string?> Augment = new Option<string?>("--augment") { Description =
        "The training augmentation as text, replacing the presets: e.g. \"scale(0.5,2) crop(256) hflip vflip rot90 "
            + "elastic(alpha=34,sigma=4) jitter(0.2)\"; steps: scale, crop, resize, hflip, vflip, rot90, rotate, "
            + "elastic, jitter, noise, blur." };
    public readonly Option<string?> Scale = new Option<string?>("--scale") { Description =
        "The presets' random scale range before the crop, MIN,MAX (default 0.5,2; the plan takes 0.7,1.4 for "
            + "gray images)." };
    public readonly Option<bool> Vflip = new Option<bool>("--vflip") { Description =
        "Also flip vertically (microscopy, aerial images)." };
    public readonly Option<int> EvalEvery = new Option<int>("--eval-every") { DefaultValueFactory = _ => 1 };
    public readonly Option<int?> Patience = new Option<int?>("--patience") { Description =
        "Early stopping: evaluations without a better mean IoU." };
    public readonly Option<int> Workers = new Option<int>("--workers") { Description =
        "Loader threads (0: one per core).", DefaultValueFactory = _ => 0 };
    public readonly Option<int> CacheMb = new Option<int>("--cache-mb") { Description =
        "Keep decoded samples in memory up to this many MiB.", DefaultValueFactory = _ => 1024 };
    public readonly Option<string> Device = new Option<string>("--device") { Description = "auto, cpu or cuda.",
        DefaultValueFactory = _ => "auto" };
    public readonly Option<string?> EncoderWeights = new Option<string?>("--encoder-weights") { Description =
        "Pretrained encoder weights: a torchvision ResNet state dict (.pth) or .safetensors file (needs a ResNet "
            + "--encoder); for --encoder mlnet-resnet18, builtin (ML.NET's ImageNet-trained ResNet18.onnx from the "
            + "NuGet cache) or that file's path; for mit-b*, a Hugging Face folder (nvidia/mit-b0) or mit_b0.pth." };
    public readonly Option<double?> EncoderLr = new Option<double?>("--encoder-lr-scale") { Description =
        "The encoder's learning rate as a share of --lr (default: the recipe's: 1; segformer with --encoder-weights "
            + "0.1, the paper's head at 10x)." };
    public readonly Option<int> FreezeEncoder = new Option<int>("--freeze-encoder-epochs") { Description =
        "Keep the encoder frozen for this many epochs at the start.", DefaultValueFactory = _ => 0 };
    public readonly Option<string> Precision = new Option<string>("--precision") { Description =
        "auto, fp32, bf16 or fp16: the convolutions' arithmetic (float32 weights and optimiser either way; fp16 with "
            + "loss scaling). auto picks bf16 where the hardware computes it natively (AVX512_BF16 or AMX on CPUs) and "
            + "a quick side-by-side shows this model faster in it, else fp32.", DefaultValueFactory = _ => "auto" };
    public readonly Option<string?> Threads = Cli.ThreadsFlag();
    public readonly Option<int> Seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
    public readonly Option<string?> TimeLimit = new Option<string?>("--time-limit") { Description =
        "Stop cleanly after the epoch in which this much time has passed (e.g. 20m)." };
    public readonly Option<string?> OutDir = new Option<string?>("--out") { Description =
        "Run folder (default runs/<timestamp>)." };
    public readonly Option<bool> Resume = new Option<bool>("--resume") { Description =
        "Continue the run in --out from its last.ckpt." };
    public readonly Option<bool> Overwrite = new Option<bool>("--overwrite") { Description =
        "Start over in an --out folder that holds a run (its checkpoints, metrics and summary are deleted)." };
    public readonly Option<string?> Config = new Option<string?>("--config") { Description =
        "Start a new run set up as a recorded one (a run folder's run.json); flags given besides take precedence "
            + "where their value differs from the default." };
    public readonly Option<bool> NoTensorBoard = new Option<bool>("--no-tensorboard") { Description =
        "Do not write TensorBoard event files (scalars per step and epoch, validation pictures) into the run folder's "
            + "tensorboard/." };
    public readonly Option<bool> Json = new Option<bool>("--json") { Description =
        "Print summary.json as the last line of standard output (progress goes to standard error)." };
    public readonly Option<int?> Nproc = new Option<int?>("--nproc") { Description =
        "Data-parallel training in this many processes on this machine (started through Open MPI's mpirun; under "
            + "mpirun, torchrun or srun the launcher's variables say it instead). --batch-size stays the global "
            + "batch." };
    public readonly Option<string> DistBackend = new Option<string>("--dist-backend") { Description =
        "How the processes talk: auto (NCCL on CUDA, MPI on the CPU), mpi or nccl.", DefaultValueFactory = _
            => "auto" };
    public readonly Option<bool> SyncBn = new Option<bool>("--sync-bn") { Description =
        "Batch normalisation over the global batch (SyncBatchNorm) in data-parallel training; default: each "
            + "process's share." };
    public readonly Option<double> DistTimeout = new Option<double>("--dist-timeout") { Description =
        "Seconds a process waits for the others in a collective before it stops with an error.",
        DefaultValueFactory = _ => 300 };
    public readonly Option<string?> Plan = new Option<string?>("--plan") { Description =
        "Train as a plan says (plan.json from 'segment plan'); flags given besides win. Without --plan, a folder "
            + "trained with no model flags (--arch, --encoder, --base-channels, --depth, --norm, --upsampling, "
            + "--dropout) is planned for this machine and --time-limit by itself." };
    public readonly Option<string?> Normalize = new Option<string?>("--normalize") { Description =
        "Input normalisation: percentile (per image, 1st and 99.8th percentiles to 0 and 1, StarDist's; "
            + "percentile:LOW,HIGH), zscore (per image), dataset (the training set's mean and std), imagenet, or "
            + "symmetric (default: imagenet for 3 channels, else symmetric; a plan chooses)." };
    public readonly Option<int?> ValBatchSize = new Option<int?>("--val-batch-size") { Description =
        "Validation images per batch (default: --batch-size when the validation images share one size, else 1)." };
    public readonly Option<bool> FitToTimeLimit = new Option<bool>("--fit-to-time-limit") { Description =
        "With --time-limit: once an epoch and an evaluation are timed, lay the epochs (and the learning-rate "
            + "schedule) over what fits, fewer or up to three times more, so the schedule ends at the limit rather "
            + "than being cut (a plan sets it)." };
    /// <summary>Tests only: throw an unexpected error before step S of epoch E ("E:S"), as a crash would.</summary>
    public readonly Option<string?> FailAt = new Option<string?>("--fail-at") { Hidden = true };
    public readonly DataFlags D;
    public readonly ModelFlags Model;

    /// <summary>Adds the flags to <paramref name="cmd"/>: the data flags, the model flags, then the rest.</summary>
    public TrainFlags(Command cmd)
    {
        D = DataFlags.Add(cmd);
        Model = ModelFlags.Add(cmd);
        foreach (var o in new Option[] { Data, Val, ValSplit, SplitSeed, InChannels, Epochs, Batch, Crop, Size, Lr,
            Optimizer,
            Schedule, PolyPower, Warmup, WeightDecay, Clip, Ema, Accumulate, Loss, ClassWeights, Smoothing, FocalGamma,
            NoAugment, Augment, Scale, Vflip, EvalEvery, Patience, Workers, CacheMb, Device, Precision, EncoderWeights,
            EncoderLr, FreezeEncoder, Threads, Seed, TimeLimit, OutDir, Resume, Overwrite, Config, NoTensorBoard, Json,
            Nproc, DistBackend, SyncBn, DistTimeout, Plan, Normalize, ValBatchSize, FitToTimeLimit, FailAt })
            cmd.Options.Add(o);
        Scale.Validators.Add(r =>
        {
            if (r.Tokens.Count == 0) return;
            try { ScaleRange(r.Tokens[^1].Value); }
            catch (OptionsException e) { r.AddError(e.Message); }
        });
    }

    /// <summary>--scale MIN,MAX: two positive numbers, MIN at most MAX, MAX at most 10; the presets' 0.5,2 when not
    /// given.</summary>
    public static (double Min, double Max) ScaleRange(string? text)
    {
        if (text is null) return (0.5, 2.0);
        var parts = text.Split(',');
        var inv = CultureInfo.InvariantCulture;
        if (parts.Length == 2 && double.TryParse(parts[0], NumberStyles.Float, inv, out double min)
            && double.TryParse(parts[1], NumberStyles.Float, inv, out double max) && min > 0 && min <= max
            && max <= 10)
            return (min, max);
        throw new OptionsException($"--scale '{text}': expected MIN,MAX with 0 < MIN <= MAX <= 10, e.g. 0.7,1.4.");
    }
}

