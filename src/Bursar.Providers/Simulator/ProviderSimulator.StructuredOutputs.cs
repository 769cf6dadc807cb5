using System.Text.Json.Nodes;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Simulator;

public sealed partial class ProviderSimulator
{
    /// <summary>The beta header of Claude's deprecated <c>output_format</c> field (the GA field is <c>output_config.format</c>).</summary>
    public const string StructuredOutputsBeta = "structured-outputs-2025-11-13";

    /// <summary>What a structured answer must be: a schema, or (OpenAI <c>json_object</c>) any JSON object.</summary>
    private sealed record StructuredFormat(JsonObject? Schema);

    /// <summary>The request's structured-output format, validated as the provider validates it; null when it asks for free text.</summary>
    private static StructuredFormat? ReadStructuredFormat(JsonObject body, Dialect d, string allText, SimulatorExchange x)
    {
        if (d == Dialect.OpenAI)
        {
            if (body["response_format"] is not { } rf) return null;
            var type = rf is JsonObject ro && ro["type"] is JsonValue tv && tv.TryGetValue<string>(out var t) ? t : null;
            switch (type)
            {
                case "text":
                    return null;
                case "json_object":
                    if (!allText.Contains("json", StringComparison.OrdinalIgnoreCase))
                        throw Bad(d, "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.", "messages");
                    return new StructuredFormat(null);
                case "json_schema":
                    var js = rf["json_schema"] as JsonObject ?? throw Bad(d, "Missing required parameter: 'response_format.json_schema'.", "response_format.json_schema");
                    if (js["name"] is not JsonValue nv || !nv.TryGetValue<string>(out var name) || name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                        throw Bad(d, "Invalid 'response_format.json_schema.name': a-z, A-Z, 0-9, underscores and dashes, at most 64 characters.", "response_format.json_schema.name");
                    return new StructuredFormat(js["schema"] as JsonObject ?? new JsonObject { ["type"] = "object" });
                default:
                    throw Bad(d, $"Invalid value: '{type}'. Supported values are: 'text', 'json_object', and 'json_schema'.", "response_format.type");
            }
        }
        var config = body["output_config"]?["format"];
        var beta = body["output_format"];
        if (config is not null && beta is not null) throw Bad(d, "output_format: cannot be combined with output_config.format; use output_config.format");
        if (beta is not null && !(x.Header("anthropic-beta") ?? "").Contains(StructuredOutputsBeta, StringComparison.Ordinal))
            throw Bad(d, $"output_format: requires the anthropic-beta header '{StructuredOutputsBeta}' (or use output_config.format)");
        var format = config ?? beta;
        if (format is null) return null;
        var field = config is not null ? "output_config.format" : "output_format";
        if (format is not JsonObject fo || fo["type"] is not JsonValue ft || !ft.TryGetValue<string>(out var ftype) || ftype != "json_schema")
            throw Bad(d, $"{field}.type: Input tag must be 'json_schema'");
        return new StructuredFormat(fo["schema"] as JsonObject ?? throw Bad(d, $"{field}.schema: Field required"));
    }

    /// <summary>A JSON text valid against <paramref name="format"/>'s schema (every property, required or not; the first enum value, const, anyOf branch).</summary>
    private static string StructuredAnswer(StructuredFormat format, string lastUser) =>
        format.Schema is null
            ? new JsonObject { ["answer"] = lastUser.Length > 40 ? lastUser[..40] : lastUser }.ToJsonString()
            : (SchemaSample(format.Schema, format.Schema, 0) ?? new JsonObject()).ToJsonString();

    /// <summary>The structured answer and its tokens, cut to <paramref name="maxTokens"/> when it is longer.</summary>
    private (string Text, int Tokens, bool Truncated) Structured(string model, string json, long maxTokens)
    {
        var tokens = _counter.Count(model, json);
        if (tokens <= maxTokens) return (json, tokens, false);
        var cut = json[..(int)Math.Max(1, json.Length * maxTokens / tokens)];
        return (cut, (int)maxTokens, true);
    }

    private static JsonNode? SchemaSample(JsonNode? schema, JsonObject root, int depth)
    {
        if (schema is not JsonObject s || depth > 12) return null;
        if (s["$ref"] is JsonValue rv && rv.TryGetValue<string>(out var r) && r.StartsWith("#/", StringComparison.Ordinal))
        {
            JsonNode? target = root;
            foreach (var part in r[2..].Split('/')) target = target?[part];
            return SchemaSample(target, root, depth + 1);
        }
        if (s.ContainsKey("const")) return s["const"]?.DeepClone();
        if (s["enum"] is JsonArray { Count: > 0 } en) return en[0]?.DeepClone();
        foreach (var key in (ReadOnlySpan<string>)["anyOf", "oneOf", "allOf"])
            if (s[key] is JsonArray { Count: > 0 } options) return SchemaSample(options.FirstOrDefault(o => o?["type"]?.ToString() != "null") ?? options[0], root, depth + 1);
        var type = s["type"] switch
        {
            JsonValue tv when tv.TryGetValue<string>(out var t) => t,
            JsonArray ta => ta.Select(x => x?.ToString()).FirstOrDefault(x => x is not null and not "null") ?? "null",
            _ => s.ContainsKey("properties") ? "object" : "string",
        };
        switch (type)
        {
            case "object":
                var o = new JsonObject();
                if (s["properties"] is JsonObject props)
                    foreach (var (name, def) in props) o[name] = SchemaSample(def, root, depth + 1);
                return o;
            case "array":
                var a = new JsonArray();
                var min = s["minItems"] is JsonValue mv && mv.TryGetValue<int>(out var m) ? Math.Max(1, m) : 1;
                for (var i = 0; i < min && i < 10; i++) a.Add(SchemaSample(s["items"], root, depth + 1));
                return a;
            case "integer":
                return s["minimum"] is JsonValue iv && iv.TryGetValue<long>(out var imin) ? imin : 1;
            case "number":
                return s["minimum"] is JsonValue nv && nv.TryGetValue<double>(out var nmin) ? nmin : 1.5;
            case "boolean":
                return true;
            case "null":
                return null;
            default:
                return s["format"]?.ToString() switch
                {
                    "date" => "2026-01-15",
                    "date-time" => "2026-01-15T10:00:00Z",
                    "email" => "someone@example.com",
                    "uri" => "https://example.com/",
                    "uuid" => "00000000-0000-4000-8000-000000000000",
                    _ => "sample",
                };
        }
    }
}
