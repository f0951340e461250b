using System.CommandLine;
using System.Globalization;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;

namespace Segmentation.Cli;

/// <summary>
/// The <c>segment</c> tool: parses the command line, runs a command and turns errors into one line and an exit
/// code: 0 success, 1 data/input/checkpoint/training errors, 2 usage errors. Stack traces only with --verbose.
/// </summary>
public static class Cli
{
    /// <summary>Exit code for success.</summary>
    public const int Ok = 0;
    /// <summary>Exit code for data, input, checkpoint and training errors.</summary>
    public const int Failure = 1;
    /// <summary>Exit code for usage errors.</summary>
    public const int Usage = 2;
    /// <summary>Exit code when training was stopped by SIGINT or SIGTERM (after writing the summary): 128 + SIGINT, as
    /// shells report it.</summary>
    public const int Interrupted = 130;

    /// <summary>Runs the tool; returns the exit code.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, bool outIsTerminal = false,
        bool errIsTerminal = false)
    {
        Segmentation.Models.NativeRuntime.PreloadShim();
        if (args.Length == 0) args = new[] { "--help" }; // `segment` alone lists the commands
        var context = new CommandContext(stdout, stderr, outIsTerminal, errIsTerminal);
        var (root, verbose) = Commands(context);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors) stderr.WriteLine($"error: {Readable(e.Message)}{Guess(e.Message)}");
            stderr.WriteLine("Run 'segment --help' (or 'segment COMMAND --help') for usage.");
            return Usage;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr,
                EnableDefaultExceptionHandler = false });
        }
        catch (Exception caught)
        {
            return Failed(caught, context, stderr, parse.GetValue(verbose));
        }
    }

    /// <summary>Every command of the tool, and the --verbose flag they share (the tests walk the tree).</summary>
    internal static (RootCommand Root, Option<bool> Verbose) Commands(CommandContext context)
    {
        var verbose = new Option<bool>("--verbose") { Description = "Show stack traces of errors.", Recursive = true };
        var root = new RootCommand("segment: train, evaluate and run semantic, instance and panoptic segmentation "
            + "models (U-Nets, FPNs, SegFormer) on TorchSharp, and run them on ONNX Runtime.");
        root.Options.Add(verbose);
        root.Subcommands.Add(TrainCommand.Create(context));
        root.Subcommands.Add(PlanCommand.Create(context));
        root.Subcommands.Add(EvalCommand.Create(context));
        root.Subcommands.Add(PredictCommand.Create(context));
        root.Subcommands.Add(ScoreCommand.Create(context));
        root.Subcommands.Add(ReportCommand.Create(context));
        root.Subcommands.Add(ImportCommand.Create(context));
        root.Subcommands.Add(ExportCommand.Create(context));
        root.Subcommands.Add(ModelsCommand.Create(context));
        root.Subcommands.Add(SummaryCommand.Create(context));
        root.Subcommands.Add(BenchCommand.Create(context));
        root.Subcommands.Add(DoctorCommand.Create(context));
        NumericFlags.Attach(root);
        return (root, verbose);
    }

    /// <summary>An error as the user sees it: one line (with the rank in a distributed run), the stack trace only
    /// with --verbose; returns the exit code.</summary>
    private static int Failed(Exception caught, CommandContext context, TextWriter stderr, bool verbose)
    {
        // Parallel work wraps what went wrong; the user needs the error inside.
        var e = caught is AggregateException { InnerExceptions.Count: > 0 } agg ? agg.Flatten()
            .InnerExceptions.OrderBy(x => x is SegmentationException ? 0 : 1).First() : caught;
        var (code, message) = e switch
        {
            OptionsException => (Usage, e.Message),
            SegmentationException => (Failure, e.Message),
            IOException or UnauthorizedAccessException or InvalidDataException => (Failure, e.Message),
            OperationCanceledException => (Failure, "cancelled"),
            _ => (Failure, $"{WithoutBacktrace(e.Message)} (unexpected: please report it, with what --verbose "
                + $"prints)"),
        };
        context.FinishLine();
        // a process of a distributed run says which it is
        string rank = "";
        try
        {
            if (Segmentation.Distributed.LaunchEnvironment.Detect() is { WorldSize: > 1 } env)
                rank = $"rank {env.Rank} of {env.WorldSize}: ";
        }
        catch (OptionsException) { } // a malformed variable: the error itself says so
        stderr.WriteLine($"error: {rank}{message}");
        if (verbose) stderr.WriteLine(e.ToString());
        else if (code == Failure && e is not (SegmentationException or IOException or UnauthorizedAccessException
            or InvalidDataException or OperationCanceledException))
            stderr.WriteLine("(run with --verbose for the stack trace)");
        return code;
    }

    /// <summary>An error's own words without the native backtrace libtorch appends ("Exception raised from ...",
    /// "frame #0: ..."): at most its first three lines.</summary>
    internal static string WithoutBacktrace(string message)
    {
        int cut = message.IndexOf("Exception raised from", StringComparison.Ordinal);
        if (cut < 0) cut = message.IndexOf("frame #0", StringComparison.Ordinal);
        var text = (cut >= 0 ? message[..cut] : message).Trim();
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.Length == 0 ? "an error without a message" : string.Join(" ", lines.Take(3));
    }

    /// <summary>System.CommandLine's parse messages with .NET type names (System.Nullable`1[System.Double]) in
    /// words.</summary>
    internal static string Readable(string message) =>
        System.Text.RegularExpressions.Regex.Replace(message, @"System\.Nullable`1\[System\.(\w+)\]|System\.(\w+)",
            m => (m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value) switch
        {
            "Int32" or "Int64" => "a whole number",
            "Double" or "Single" => "a number",
            "Boolean" => "true or false",
            "String" => "text",
            var other => other,
        });

    /// <summary>Flags users guess for the model's size and kind, and the ones that exist.</summary>
    private static readonly string[] ModelGuesses = { "--model", "--model-size", "--size-preset", "--width",
        "--network", "--backbone", "--net", "--preset" };

    /// <summary>For an unknown flag a user guessed for the model (<c>--model small</c>), the flags that do
    /// it.</summary>
    internal static string Guess(string message) => ModelGuesses.Any(g => message.Contains($"'{g}'",
        StringComparison.Ordinal))
        ? " (the model is chosen by --arch unet|segformer, --encoder unet|resnet18|resnet34|resnet50|mlnet-resnet18|"
            + "mit-b0..mit-b5 and, for the U-Net, --base-channels and --depth; or leave them out and 'segment train "
            + "--data DIR' plans the model for your data and machine; 'segment models' lists them)"
        : "";

    /// <summary>The <c>--threads</c> flag of a command that computes.</summary>
    internal static Option<string?> ThreadsFlag() => new("--threads") { Description =
        "libtorch's (or ONNX Runtime's) CPU threads: a number, or auto (the default: one per core that the machine's "
            + "load average leaves free; on a busy machine more threads than free cores can be several times "
            + "slower)." };

    /// <summary>--threads as a count: a number, or auto (<see cref="Models.CpuThreads.Auto"/>, said on
    /// <paramref name="log"/>).</summary>
    internal static int ResolveThreads(string? value, TextWriter? log)
    {
        if (value is null or "auto")
        {
            var (threads, reason) = Models.CpuThreads.Auto();
            log?.WriteLine($"threads: {threads} ({reason}; --threads to choose)");
            return threads;
        }
        return int.TryParse(value, System.Globalization.NumberStyles.Integer,
            System.Globalization.CultureInfo.InvariantCulture, out int t) && t >= 1 ? t
            : throw new OptionsException($"--threads '{value}' must be a whole number of at least 1, or auto.");
    }

    /// <summary>The <c>--overwrite</c> flag of a command that writes one output.</summary>
    internal static Option<bool> OverwriteFlag() => new("--overwrite") { Description =
        "Replace --out if it exists (otherwise the command refuses before doing anything)." };

    /// <summary>
    /// The one rule for every path a command writes that the user named (<c>--out</c> of train, plan, predict, eval,
    /// export, import, report, bench): a file the user has is never replaced unless <paramref name="overwrite"/>, and a
    /// folder is never taken for the file. Checked before any work starts; nothing the user had is lost unasked.
    /// </summary>
    internal static void RefuseToReplace(string path, bool overwrite, string? example = null)
    {
        if (example is not null && (Directory.Exists(path) || path.EndsWith('/') || path.EndsWith('\\')))
            throw new OptionsException($"--out {path} is a folder; name the file to write (say "
                + $"{Path.Combine(path, example)}).");
        if ((File.Exists(path) || RegularFile.Problem(path) is not (null or "missing" or "a folder")) && !overwrite)
            throw new OptionsException($"{path} exists already; give --overwrite to replace it, or another --out.");
    }

    /// <summary>The same rule for the files a command writes into a folder the user named: all are checked before
    /// any is written; and a file where the folder should be is refused.</summary>
    internal static void RefuseToReplace(string folder, IEnumerable<string> names, bool overwrite)
    {
        RefuseFileAsFolder(folder);
        var existing = names.Select(n => Path.Combine(folder, n)).Where(File.Exists).ToList();
        if (existing.Count > 0 && !overwrite)
            throw new OptionsException($"{string.Join(", ", existing.Take(3))}{(existing.Count > 3 ? ", ..." : "")} "
                + $"exist{(existing.Count == 1 ? "s" : "")} already; give --overwrite to replace "
                + $"{(existing.Count == 1 ? "it" : "them")}, or another --out.");
    }

    /// <summary>An <c>--out</c> folder that is a file the user has: refused, never written into or over.</summary>
    internal static void RefuseFileAsFolder(string folder)
    {
        if (File.Exists(folder) || RegularFile.Problem(folder) is not (null or "missing" or "a folder"))
            throw new OptionsException($"--out {folder} is a file, not a folder; name a folder (it is created if "
                + "missing).");
    }

    internal static double ParseDuration(string text)
    {
        var t = text.Trim().ToLowerInvariant();
        double Num(string s) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0
            ? v : throw new OptionsException($"Duration '{text}' is not a positive number with a unit (e.g. 90s, 20m, "
            + $"1.5h).");
        if (t.EndsWith('h')) return Num(t[..^1]) * 3600;
        if (t.EndsWith('m')) return Num(t[..^1]) * 60;
        if (t.EndsWith('s')) return Num(t[..^1]);
        return Num(t);
    }

    internal static T ParseEnum<T>(string value, string option, params (string Name, T Value)[] map)
    {
        foreach (var (name, v) in map)
            if (string.Equals(name, value, StringComparison.OrdinalIgnoreCase)) return v;
        throw new OptionsException($"{option} '{value}' is not one of: {string.Join(", ", map.Select(m => m.Name))}.");
    }

    /// <summary>
    /// The model the flags describe: <c>--encoder</c> names any registered encoder; <c>--base-channels</c>,
    /// <c>--depth</c>, <c>--dropout</c> and <c>--upsampling</c> shape the U-Net paper's encoder and decoder;
    /// <c>--norm</c> goes to every part that has a normalisation.
    /// </summary>
    internal static ModelDescription Model(int inChannels, int classes, int baseChannels, int depth, string upsampling,
        string norm = "batch", double dropout = 0, string encoder = "unet", string arch = "unet",
        int fullResolution = 0)
    {
        var entry = ModelRegistry.Find(PartKind.Encoder, encoder); // an unknown name lists the known ones
        if (arch == "unet") arch = entry.DefaultArchitecture; // --encoder mit-b0 alone is SegFormer
        if (arch != "unet")
        {
            if (arch == "segformer" && encoder == "unet")
                throw new OptionsException("--arch segformer needs a Mix Transformer encoder: --encoder mit-b0 (to "
                    + "mit-b5).");
            return new ModelDescription { Architecture = arch, Encoder = new ModelPart(encoder), Classes = classes,
                InChannels = inChannels }.Resolve();
        }
        var normLayer = ParseEnum(norm, "--norm", ("batch", NormLayer.Batch), ("group", NormLayer.Group),
            ("none", NormLayer.None));
        var up = ParseEnum(upsampling, "--upsampling", ("transposed", UpsamplingMode.Transposed),
            ("bilinear", UpsamplingMode.Bilinear));
        if (fullResolution != 0 && (encoder == "unet" || arch != "unet"))
            throw new OptionsException($"--full-res-skip {fullResolution}: the skip is for smp's decoder on a ResNet "
                + "--encoder; the paper's U-Net has one at every stride already.");
        var d = encoder == "unet"
            ? ModelDescription.UNet(classes, inChannels, baseChannels, depth, up, normLayer, dropout)
            : ModelDescription.For(encoder, classes, inChannels) with { Decoder = ModelPart.Of("smp-unet",
            new SmpUNetDecoderOptions { Norm = normLayer, FullResolutionChannels = fullResolution }) };
        return d.Resolve();
    }

    /// <summary>
    /// The model in a few words, for the CLI's lines: "U-Net 3->2, base 64, depth 4, transposed upsampling, batch norm"
    /// for the paper's U-Net, "U-Net 3->12, resnet34 encoder, smp-unet decoder" otherwise.
    /// </summary>
    internal static string Shape(ModelDescription d)
    {
        var name = d.Architecture == "unet" ? "U-Net" : d.Architecture;
        if (d.Encoder.Name != "unet" || d.Decoder?.Name != "unet")
            return $"{name} {d.InChannels}->{d.Classes}, {d.Encoder.Name} encoder, {d.Decoder?.Name ?? "default"} "
                + $"decoder";
        var e = d.Encoder.OptionsAs<UNetEncoderOptions>();
        var u = d.Decoder.OptionsAs<UNetDecoderOptions>();
        return $"{name} {d.InChannels}->{d.Classes}, base {e.BaseChannels}, depth {e.Depth}, "
            + $"{u.Upsampling.ToString().ToLowerInvariant()} upsampling, "
            + $"{e.Norm.ToString().ToLowerInvariant()} norm";
    }
}

/// <summary>Where commands write, and whether a terminal is watching.</summary>
internal sealed class CommandContext(TextWriter stdout, TextWriter stderr, bool outIsTerminal, bool errIsTerminal)
{
    public TextWriter Out { get; } = stdout;
    public TextWriter Err { get; } = stderr;
    /// <summary>Whether a terminal shows what is written to <paramref name="writer"/> (standard output or
    /// error).</summary>
    public bool IsTerminal(TextWriter writer) => ReferenceEquals(writer, Out) ? outIsTerminal
        : ReferenceEquals(writer, Err) && errIsTerminal;
    private TextWriter? openLine; // the writer whose status line is showing

    /// <summary>Rewrites the current status line (interactive terminals only).</summary>
    public void Status(TextWriter writer, string line)
    {
        if (!IsTerminal(writer)) return;
        writer.Write("\r" + line.PadRight(Math.Min(Math.Max(40, SafeWidth() - 1), 160)));
        openLine = writer;
    }

    /// <summary>Clears the status line before normal output, so tables stay contiguous.</summary>
    public void FinishLine(TextWriter? writer = null)
    {
        if (openLine is not { } w) return;
        w.Write("\r" + new string(' ', Math.Min(Math.Max(40, SafeWidth() - 1), 160)) + "\r");
        openLine = null;
    }

    private static int SafeWidth()
    {
        try { return Console.WindowWidth; } catch (IOException) { return 100; }
    }
}
