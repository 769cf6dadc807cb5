using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>Structured outputs across dialects through the gateway: the schema reaches the other provider in its own shape, the JSON comes back valid.</summary>
[Collection(GatewayCollection.Name)]
public sealed class StructuredOutputGatewayTests(GatewayFixture gw)
{
    private static readonly JsonObject Schema = (JsonObject)JsonNode.Parse("""
        {"type":"object","additionalProperties":false,"required":["sentiment","score"],
         "properties":{"sentiment":{"type":"string","enum":["positive","negative"]},"score":{"type":"integer","minimum":0}}}
        """)!;

    private async Task<(HttpStatusCode Status, JsonNode Body)> Send(string path, JsonObject body)
    {
        using var req = gw.Post(path, body.ToJsonString(), feature: "structured");
        if (path == "/v1/messages") req.Headers.Add("anthropic-version", "2023-06-01");
        using var resp = await gw.Http.SendAsync(req);
        return (resp.StatusCode, JsonNode.Parse(await resp.Content.ReadAsStringAsync())!);
    }

    [Fact]
    public async Task An_OpenAI_caller_gets_schema_valid_json_from_Claude()
    {
        var (status, body) = await Send("/v1/chat/completions", new JsonObject
        {
            ["model"] = "claude-haiku-4-5",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Das Essen war großartig!" }),
            ["response_format"] = new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "review", ["schema"] = Schema.DeepClone(), ["strict"] = true } },
        });
        Assert.Equal(HttpStatusCode.OK, status);
        var answer = JsonNode.Parse(body["choices"]![0]!["message"]!["content"]!.GetValue<string>())!;
        Assert.Equal("positive", answer["sentiment"]!.GetValue<string>());
        Assert.True(answer["score"]!.GetValue<int>() >= 0);
    }

    [Fact]
    public async Task A_Claude_caller_gets_schema_valid_json_from_OpenAI()
    {
        var (status, body) = await Send("/v1/messages", new JsonObject
        {
            ["model"] = "gpt-4o-mini", ["max_tokens"] = 200,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "料理は最高でした" }),
            ["output_config"] = new JsonObject { ["format"] = new JsonObject { ["type"] = "json_schema", ["schema"] = Schema.DeepClone() } },
        });
        Assert.Equal(HttpStatusCode.OK, status);
        var answer = JsonNode.Parse(body["content"]![0]!["text"]!.GetValue<string>())!;
        Assert.Equal("positive", answer["sentiment"]!.GetValue<string>());
    }

    [Fact]
    public async Task Json_object_mode_to_Claude_is_a_400_in_the_callers_shape_naming_the_field()
    {
        var (status, body) = await Send("/v1/chat/completions", new JsonObject
        {
            ["model"] = "claude-haiku-4-5",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Reply in JSON." }),
            ["response_format"] = new JsonObject { ["type"] = "json_object" },
        });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("response_format", body["error"]!["param"]!.GetValue<string>());
        Assert.Contains("json_schema", body["error"]!["message"]!.GetValue<string>());
    }
}
