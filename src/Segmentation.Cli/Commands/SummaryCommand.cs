using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Layers;

namespace Segmentation.Cli;

/// <summary><c>segment summary</c>: layer table, parameters and multiply-accumulates.</summary>
internal static class SummaryCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("summary",
            "Layer table, parameter count and multiply-accumulates of a model the flags describe (a U-Net by "
                + "default).");
        var m = ModelFlags.Add(cmd);
        var inChannels = new Option<int>("--in-channels") { DefaultValueFactory = _ => 3 };
        var classes = new Option<int>("--classes") { DefaultValueFactory = _ => 2 };
        var size = new Option<string>("--size") { Description = "Input HxW.", DefaultValueFactory = _ => "256x256" };
        var json = new Option<bool>("--json") { Description = "Print JSON (params, macs, layers)." };
        foreach (var o in new Option[] { inChannels, classes, size, json }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var options = ModelFlags.Read(p, m, shapes: false, p.GetValue(inChannels), p.GetValue(classes));
            var s = Size2.Parse(p.GetValue(size)!);
            var summary = ModelSummary.For(options, s.Height, s.Width);
            if (p.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["params"] = summary.Parameters, ["macs"] = summary.MultiplyAccumulates, ["height"] = s.Height,
                        ["width"] = s.Width,
                    ["layers"] = new JsonArray(summary.Layers.Select(l => (JsonNode?)new JsonObject
                    {
                        ["name"] = l.Name, ["type"] = l.Kind,
                            ["output"] = new JsonArray(l.OutputShape.Select(x => (JsonNode?)x).ToArray()),
                        ["params"] = l.Parameters, ["macs"] = l.MultiplyAccumulates,
                    }).ToArray()),
                };
                ctx.Out.WriteLine(o.ToJsonString());
                return Cli.Ok;
            }
            int w = summary.Layers.Max(l => l.Name.Length);
            ctx.Out.WriteLine($"{"layer".PadRight(w)}  {"type",-15}  {"output (C x H x W)",-20}  {"params",12}  "
                + $"{"MACs",16}");
            foreach (var l in summary.Layers)
                ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{l.Name.PadRight(w)}  {l.Kind,-15}  {string.Join(" x ", l.OutputShape),-20}  "
                        + $"{l.Parameters,12:N0}  {l.MultiplyAccumulates,16:N0}"));
            ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"total: {summary.Parameters:N0} parameters, {summary.MultiplyAccumulates / 1e9:F2} GMACs per "
                    + $"{s.Height}x{s.Width} image"));
            return Cli.Ok;
        });
        return cmd;
    }
}
