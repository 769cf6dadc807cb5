using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Providers.Dialects;
using Bursar.Providers.Simulator;
using Bursar.Providers.Translation;

namespace Bursar.Providers.Tests;

/// <summary>Structured outputs: OpenAI <c>response_format</c> and Claude's <c>output_config.format</c> translated both ways, and the Simulator's schema-valid JSON.</summary>
public sealed class StructuredOutputTests
{
    internal static readonly JsonObject Schema = (JsonObject)JsonNode.Parse("""
        {"type":"object","additionalProperties":false,"required":["city","nights","tags","guest"],
         "properties":{"city":{"type":"string","enum":["Zürich","東京","القاهرة"]},"nights":{"type":"integer","minimum":1},"tags":{"type":"array","items":{"type":"string"}},
                       "guest":{"type":"object","additionalProperties":false,"required":["name","vip"],"properties":{"name":{"type":"string"},"vip":{"type":"boolean"}}},
                       "note":{"anyOf":[{"type":"string"},{"type":"null"}]}}}
        """)!;

    private static JsonObject OpenAI(JsonNode responseFormat, string model = "claude-haiku-4-5") => new()
    {
        ["model"] = model,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Buche ein Hotel, bitte. ホテルを予約してください。" }),
        ["response_format"] = responseFormat,
    };

    private static JsonObject JsonSchemaFormat() => new() { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "booking", ["strict"] = true, ["schema"] = Schema.DeepClone() } };

    [Fact]
    public void An_OpenAI_json_schema_becomes_Claudes_output_config_format()
    {
        var a = RequestTranslator.Translate(Dialect.OpenAI, Dialect.Anthropic, OpenAI(JsonSchemaFormat()));
        Assert.Equal("json_schema", a["output_config"]!["format"]!["type"]!.GetValue<string>());
        Assert.Equal(Schema.ToJsonString(), a["output_config"]!["format"]!["schema"]!.ToJsonString());
        Assert.Null(a["response_format"]);
        Assert.Null(a["output_format"]); // the GA field, not the deprecated beta one
    }

    [Theory]
    [InlineData("""{"type":"json_object"}""", "response_format", "json_object")]
    [InlineData("""{"type":"json_schema","json_schema":{"name":"x"}}""", "response_format.json_schema.schema", "schema")]
    [InlineData("""{"type":"grammar"}""", "response_format", "grammar")]
    public void What_Claude_cannot_express_is_a_400_naming_the_field(string format, string field, string mentions)
    {
        var e = Assert.Throws<RequestTranslator.TranslationException>(() => RequestTranslator.Translate(Dialect.OpenAI, Dialect.Anthropic, OpenAI(JsonNode.Parse(format)!)));
        Assert.Equal((400, field), (e.Error.Status, e.Error.Param));
        Assert.Contains(mentions, e.Error.Message);
    }

    private static JsonObject Anthropic(string extra) => (JsonObject)JsonNode.Parse($$"""
        {"model":"gpt-4o-mini","max_tokens":200,"messages":[{"role":"user","content":"Réserve un hôtel."}],{{extra}}}
        """)!;

    [Theory]
    [InlineData("output_config")]
    [InlineData("output_format")]
    public void Claudes_structured_output_becomes_a_strict_OpenAI_json_schema(string field)
    {
        var format = new JsonObject { ["type"] = "json_schema", ["schema"] = Schema.DeepClone() };
        var extra = field == "output_config" ? $"\"output_config\":{new JsonObject { ["format"] = format }.ToJsonString()}" : $"\"output_format\":{format.ToJsonString()}";
        var o = RequestTranslator.Translate(Dialect.Anthropic, Dialect.OpenAI, Anthropic(extra));
        var rf = o["response_format"]!;
        Assert.Equal("json_schema", rf["type"]!.GetValue<string>());
        Assert.True(rf["json_schema"]!["strict"]!.GetValue<bool>());
        Assert.Equal("structured_output", rf["json_schema"]!["name"]!.GetValue<string>());
        Assert.Equal(Schema.ToJsonString(), rf["json_schema"]!["schema"]!.ToJsonString());
        // and back: the schema survives the round trip
        var back = RequestTranslator.Translate(Dialect.OpenAI, Dialect.Anthropic, o);
        Assert.Equal(Schema.ToJsonString(), back["output_config"]!["format"]!["schema"]!.ToJsonString());
    }

    [Theory]
    [InlineData("\"output_config\":{\"format\":{\"type\":\"json_schema\",\"schema\":{}}},\"output_format\":{\"type\":\"json_schema\",\"schema\":{}}", "output_format")]
    [InlineData("\"output_config\":{\"effort\":\"low\"}", "output_config.effort")]
    [InlineData("\"output_config\":{\"format\":{\"type\":\"xml\"}}", "output_config.format.type")]
    [InlineData("\"output_format\":{\"type\":\"json_schema\"}", "output_format.schema")]
    [InlineData("\"output_config\":\"json\"", "output_config")]
    public void What_OpenAI_cannot_express_is_a_400_naming_the_field(string extra, string field)
    {
        var e = Assert.Throws<RequestTranslator.TranslationException>(() => RequestTranslator.Translate(Dialect.Anthropic, Dialect.OpenAI, Anthropic(extra)));
        Assert.Equal((400, field), (e.Error.Status, e.Error.Param));
    }

    /// <summary>Whether <paramref name="value"/> is valid against the subset of JSON Schema the test schema uses.</summary>
    internal static bool Valid(JsonNode? value, JsonNode? schema)
    {
        if (schema is not JsonObject s) return true;
        if (s["anyOf"] is JsonArray any) return any.Any(o => Valid(value, o));
        if (s["enum"] is JsonArray en && !en.Any(e => JsonNode.DeepEquals(e, value))) return false;
        switch (s["type"]?.GetValue<string>())
        {
            case "object":
                if (value is not JsonObject o) return false;
                var props = s["properties"] as JsonObject ?? [];
                if (s["required"] is JsonArray req && req.Any(r => !o.ContainsKey(r!.GetValue<string>()))) return false;
                if (s["additionalProperties"] is JsonValue ap && !ap.GetValue<bool>() && o.Any(kv => !props.ContainsKey(kv.Key))) return false;
                return o.All(kv => !props.ContainsKey(kv.Key) || Valid(kv.Value, props[kv.Key]));
            case "array": return value is JsonArray a && a.All(i => Valid(i, s["items"]));
            case "string": return value is JsonValue sv && sv.TryGetValue<string>(out _);
            case "integer": return value is JsonValue iv && iv.TryGetValue<long>(out var n) && n >= (s["minimum"]?.GetValue<long>() ?? long.MinValue);
            case "boolean": return value is JsonValue bv && bv.TryGetValue<bool>(out _);
            case "null": return value is null;
            default: return true;
        }
    }

    private static async Task<(int Status, JsonNode Body)> Send(SimulatorHarness h, string path, JsonObject body, string? beta = null)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        if (path == "/v1/messages") req.Headers.Add("x-api-key", "k");
        else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "k");
        if (beta is not null) req.Headers.Add("anthropic-beta", beta);
        using var resp = await h.Http.SendAsync(req);
        return ((int)resp.StatusCode, JsonNode.Parse(await resp.Content.ReadAsStringAsync())!);
    }

    [Fact]
    public async Task The_Simulator_answers_an_OpenAI_json_schema_with_schema_valid_json()
    {
        using var h = new SimulatorHarness();
        var (status, body) = await Send(h, "/v1/chat/completions", OpenAI(JsonSchemaFormat(), "gpt-4o-mini"));
        Assert.Equal(200, status);
        var content = JsonNode.Parse(body["choices"]![0]!["message"]!["content"]!.GetValue<string>());
        Assert.True(Valid(content, Schema), content!.ToJsonString());
        Assert.Equal("stop", body["choices"]![0]!["finish_reason"]!.GetValue<string>());

        // json_object: any JSON object, and OpenAI's own rule that the prompt says "json"
        var (bad, badBody) = await Send(h, "/v1/chat/completions", OpenAI(new JsonObject { ["type"] = "json_object" }, "gpt-4o-mini"));
        Assert.Equal(400, bad);
        Assert.Equal("messages", badBody["error"]!["param"]!.GetValue<string>());
        var asks = OpenAI(new JsonObject { ["type"] = "json_object" }, "gpt-4o-mini");
        asks["messages"]![0]!["content"] = "Antworte als JSON.";
        var (ok, okBody) = await Send(h, "/v1/chat/completions", asks);
        Assert.Equal(200, ok);
        Assert.IsType<JsonObject>(JsonNode.Parse(okBody["choices"]![0]!["message"]!["content"]!.GetValue<string>()));
    }

    [Fact]
    public async Task The_Simulator_answers_Claudes_output_config_with_schema_valid_json_and_the_beta_field_needs_its_header()
    {
        using var h = new SimulatorHarness();
        var format = new JsonObject { ["type"] = "json_schema", ["schema"] = Schema.DeepClone() };
        var ga = new JsonObject { ["model"] = "claude-haiku-4-5", ["max_tokens"] = 300, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "احجز فندقا" }), ["output_config"] = new JsonObject { ["format"] = format.DeepClone() } };
        var (status, body) = await Send(h, "/v1/messages", ga);
        Assert.Equal(200, status);
        var json = JsonNode.Parse(body["content"]![0]!["text"]!.GetValue<string>());
        Assert.True(Valid(json, Schema), json!.ToJsonString());

        var beta = new JsonObject { ["model"] = "claude-haiku-4-5", ["max_tokens"] = 300, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Book it" }), ["output_format"] = format.DeepClone() };
        var (noHeader, err) = await Send(h, "/v1/messages", beta);
        Assert.Equal(400, noHeader);
        Assert.Contains(ProviderSimulator.StructuredOutputsBeta, err["error"]!["message"]!.GetValue<string>());
        Assert.Equal(200, (await Send(h, "/v1/messages", beta, ProviderSimulator.StructuredOutputsBeta)).Status);

        // cut off by max_tokens: the JSON is incomplete and the stop reason says so
        ga["max_tokens"] = 3;
        var (_, cut) = await Send(h, "/v1/messages", ga);
        Assert.Equal("max_tokens", cut["stop_reason"]!.GetValue<string>());
    }
}
