using System.Text.Json.Nodes;

namespace Segmentation.Tests.Cli;

/// <summary>What an in-process <c>segment</c> run returned and printed.</summary>
internal sealed record CliResult(int Code, string Out, string Err)
{
    /// <summary>The JSON object on the last line of standard output (--json).</summary>
    public JsonObject LastJson() => JsonNode.Parse(Out.TrimEnd().Split('\n')[^1])!.AsObject();

    /// <summary>Runs <c>segment</c> with <paramref name="args"/> in this process, with no terminal. libtorch's thread
    /// count, which the tool sets for its process (--threads), is put back after, so no test inherits it.</summary>
    public static CliResult Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int threads = TorchSharp.torch.get_num_threads();
        try
        {
            int code = Segmentation.Cli.Cli.Run(args, o, e);
            return new CliResult(code, o.ToString(), e.ToString());
        }
        finally { TorchSharp.torch.set_num_threads(threads); }
    }
}
