using System.CommandLine;
using System.Text.Json.Nodes;
using Segmentation.Models;

namespace Segmentation.Cli;

/// <summary><c>segment models</c>: the registry: architectures and parts, their options and pretrained sources, and
/// what each encoder's model supports.</summary>
internal static class ModelsCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("models",
            "The parts a model can be made of (--encoder and the description's names), their options with defaults, "
                + "pretrained "
            + "weights they take, and what each encoder's default model supports (bf16/fp16, the float64 check, ONNX "
            + "export).");
        var json = new Option<bool>("--json") { Description = "Print one JSON object." };
        cmd.Options.Add(json);
        cmd.SetAction(p =>
        {
            var result = new JsonObject
            {
                ["architectures"] = new JsonArray(ModelRegistry.ArchitectureNames()
                    .Select(a => (JsonNode?)new JsonObject { ["name"] = a.Name, ["summary"] = a.Summary }).ToArray()),
            };
            foreach (var kind in Enum.GetValues<PartKind>())
                result[kind.ToString().ToLowerInvariant() + "s"] = new JsonArray(ModelRegistry.Parts(kind)
                    .Select(part => (JsonNode?)Describe(part)).ToArray());
            if (p.GetValue(json))
            {
                ctx.Out.WriteLine(result.ToJsonString());
                return Cli.Ok;
            }
            foreach (var (name, items) in result)
                foreach (var item in items!.AsArray())
                    ctx.Out.WriteLine($"{name.TrimEnd('s'),-12} {item!["name"],-16} {item["summary"]}"
                        + (item["options"] is JsonObject o && o.Count > 0 ? $"\n{"",-29} options {o.ToJsonString()}"
                        : "")
                        + (item["pretrained"] is JsonArray w && w.Count > 0
                        ? $"\n{"",-29} pretrained "
                        + $"{string.Join("; ", w.Select(x => $"{x!["name"]}: {x["description"]}"))}" : "")
                        + (item["supports"] is JsonObject s ? $"\n{"",-29} supports {Supports(s)}" : ""));
            return Cli.Ok;
        });
        return cmd;
    }

    private static JsonObject Describe(RegisteredPart part)
    {
        var o = new JsonObject
        {
            ["name"] = part.Name, ["summary"] = part.Summary, ["options"] = part.Defaults,
            ["pretrained"] =
                new JsonArray(part.Pretrained.Select(w => (JsonNode?)new JsonObject { ["name"] = w.Name,
                    ["description"] = w.Description }).ToArray()),
        };
        if (part.Kind != PartKind.Encoder) return o;
        ModelSupport s;
        try
        {
            using var model = new SegmentationModel(ModelDescription.For(part.Name));
            s = model.Supports();
        }
        catch (OptionsException e)
        {
            // An encoder registered with parts of its own may not fit the architecture's defaults.
            s = new ModelSupport(false, false, false, $"its default model does not build: {e.Message}");
        }
        o["supports"] = new JsonObject { ["precision"] = s.Precision, ["check"] = s.Check, ["export"] = s.Export,
            ["why"] = s.Why };
        return o;
    }

    private static string Supports(JsonObject s) =>
        string.Join(", ", new[] { ("bf16/fp16", "precision"), ("float64 check", "check"), ("ONNX export", "export") }
            .Select(x => $"{x.Item1} {((bool)s[x.Item2]! ? "yes" : "no")}")) + (s["why"] is { } why ? $" ({why})" : "");
}
