using System.Net.Http.Headers;
using System.Text.Json.Nodes;

namespace Bursar.Providers.Tests;

/// <summary>The Simulator's Responses API and embeddings, held to PROVIDER_API.md sections 8 and 9.</summary>
public sealed class SimulatorResponsesTests
{
    private static Task<(int Status, JsonNode? Body, HttpResponseMessage Response)> Post(SimulatorHarness h, JsonObject body) => h.PostAsync("/v1/responses", body, anthropic: false);

    private static async Task<(int Status, JsonNode? Body)> Send(SimulatorHarness h, HttpMethod method, string path)
    {
        using var req = new HttpRequestMessage(method, path);
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "k");
        var resp = await h.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        return ((int)resp.StatusCode, JsonNode.Parse(text));
    }

    private static List<(string Event, JsonObject Data)> Events(string sse) =>
        sse.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(f =>
        {
            var lines = f.Split('\n');
            var ev = lines.First(l => l.StartsWith("event: ", StringComparison.Ordinal))[7..];
            var data = (JsonObject)JsonNode.Parse(lines.First(l => l.StartsWith("data: ", StringComparison.Ordinal))[6..])!;
            return (ev, data);
        }).ToList();

    [Fact]
    public async Task Responses_answers_with_output_text_and_exact_usage()
    {
        using var h = new SimulatorHarness();
        var (status, body, _) = await Post(h, new JsonObject { ["model"] = "gpt-4o", ["input"] = "Say hello", ["instructions"] = "Be brief." });
        Assert.Equal(200, status);
        Assert.Equal("response", body!["object"]!.GetValue<string>());
        Assert.StartsWith("resp_", body["id"]!.GetValue<string>());
        Assert.Equal("completed", body["status"]!.GetValue<string>());
        Assert.Equal("Be brief.", body["instructions"]!.GetValue<string>());
        var message = body["output"]!.AsArray().Single()!;
        Assert.Equal("message", message["type"]!.GetValue<string>());
        Assert.False(string.IsNullOrWhiteSpace(message["content"]![0]!["text"]!.GetValue<string>()));
        var u = body["usage"]!;
        Assert.True(u["input_tokens"]!.GetValue<long>() > 0);
        Assert.Equal(0, u["input_tokens_details"]!["cached_tokens"]!.GetValue<long>());
        Assert.Equal(0, u["output_tokens_details"]!["reasoning_tokens"]!.GetValue<long>());
        Assert.Equal(u["input_tokens"]!.GetValue<long>() + u["output_tokens"]!.GetValue<long>(), u["total_tokens"]!.GetValue<long>());
    }

    [Fact]
    public async Task Stream_is_the_typed_event_sequence_ending_in_response_completed_with_usage()
    {
        using var h = new SimulatorHarness();
        var (status, body, resp) = await Post(h, new JsonObject { ["model"] = "gpt-4.1", ["input"] = "Stream please", ["stream"] = true });
        Assert.Equal(200, status);
        Assert.Equal("text/event-stream", resp.Content.Headers.ContentType!.MediaType);
        var events = Events(body!.GetValue<string>());
        Assert.Equal(["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"], events.Take(4).Select(e => e.Event));
        Assert.Equal("response.completed", events[^1].Event);
        Assert.Equal(Enumerable.Range(0, events.Count), events.Select(e => e.Data["sequence_number"]!.GetValue<int>()));
        Assert.True(events[0].Data["response"]!["usage"] is null);
        var text = string.Concat(events.Where(e => e.Event == "response.output_text.delta").Select(e => e.Data["delta"]!.GetValue<string>()));
        Assert.Equal(events.Single(e => e.Event == "response.output_text.done").Data["text"]!.GetValue<string>(), text);
        Assert.True(events[^1].Data["response"]!["usage"]!["output_tokens"]!.GetValue<long>() > 0);
        Assert.DoesNotContain("[DONE]", body.GetValue<string>());
    }

    [Fact]
    public async Task A_chain_rebills_the_stored_context_as_input_and_hits_the_prompt_cache()
    {
        using var h = new SimulatorHarness();
        var (_, first, _) = await Post(h, new JsonObject { ["model"] = "gpt-4o", ["input"] = SimulatorHarness.Words(400) });
        var firstInput = first!["usage"]!["input_tokens"]!.GetValue<long>();
        Assert.True(firstInput >= 1024);
        var (status, second, _) = await Post(h, new JsonObject { ["model"] = "gpt-4o", ["input"] = "And one more thing?", ["previous_response_id"] = first["id"]!.GetValue<string>() });
        Assert.Equal(200, status);
        var u = second!["usage"]!;
        Assert.True(u["input_tokens"]!.GetValue<long>() > firstInput + first["usage"]!["output_tokens"]!.GetValue<long>());
        var cached = u["input_tokens_details"]!["cached_tokens"]!.GetValue<long>();
        Assert.True(cached >= 1024 && (cached - 1024) % 128 == 0, $"cached {cached}");
        Assert.Equal(first["id"]!.GetValue<string>(), second["previous_response_id"]!.GetValue<string>());
    }

    [Fact]
    public async Task Stored_responses_are_read_listed_and_deleted()
    {
        using var h = new SimulatorHarness();
        var (_, created, _) = await Post(h, new JsonObject
        {
            ["model"] = "gpt-4o-mini",
            ["input"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "one" }, new JsonObject { ["role"] = "user", ["content"] = "two" }),
        });
        var id = created!["id"]!.GetValue<string>();
        var (gs, got) = await Send(h, HttpMethod.Get, $"/v1/responses/{id}");
        Assert.Equal(200, gs);
        Assert.Equal(created.ToJsonString(), got!.ToJsonString());
        var (ls, list) = await Send(h, HttpMethod.Get, $"/v1/responses/{id}/input_items?order=asc&limit=1");
        Assert.Equal(200, ls);
        Assert.Equal("list", list!["object"]!.GetValue<string>());
        Assert.Equal("one", list["data"]![0]!["content"]![0]!["text"]!.GetValue<string>());
        Assert.True(list["has_more"]!.GetValue<bool>());
        var (ds, deleted) = await Send(h, HttpMethod.Delete, $"/v1/responses/{id}");
        Assert.Equal(200, ds);
        Assert.True(deleted!["deleted"]!.GetValue<bool>());
        var (missing, error) = await Send(h, HttpMethod.Get, $"/v1/responses/{id}");
        Assert.Equal(404, missing);
        Assert.Contains("not found", error!["error"]!["message"]!.GetValue<string>());

        var (_, unstored, _) = await Post(h, new JsonObject { ["model"] = "gpt-4o-mini", ["input"] = "x", ["store"] = false });
        Assert.Equal(404, (await Send(h, HttpMethod.Get, $"/v1/responses/{unstored!["id"]!.GetValue<string>()}")).Status);
        var (chainStatus, chainError, _) = await Post(h, new JsonObject { ["model"] = "gpt-4o-mini", ["input"] = "x", ["previous_response_id"] = "resp_nope" });
        Assert.Equal(400, chainStatus);
        Assert.Equal("previous_response_id", chainError!["error"]!["param"]!.GetValue<string>());
    }

    [Fact]
    public async Task Function_tools_are_called_then_their_output_is_answered()
    {
        using var h = new SimulatorHarness();
        var tools = new JsonArray(new JsonObject
        {
            ["type"] = "function", ["name"] = "get_weather",
            ["parameters"] = JsonNode.Parse("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"""),
        });
        var (_, first, _) = await Post(h, new JsonObject { ["model"] = "gpt-4o", ["input"] = "Weather in Paris?", ["tools"] = tools.DeepClone() });
        var call = first!["output"]!.AsArray().Single()!;
        Assert.Equal("function_call", call["type"]!.GetValue<string>());
        Assert.Equal("get_weather", call["name"]!.GetValue<string>());
        Assert.Contains("Paris", call["arguments"]!.GetValue<string>());
        var (_, second, _) = await Post(h, new JsonObject
        {
            ["model"] = "gpt-4o", ["tools"] = tools.DeepClone(), ["previous_response_id"] = first["id"]!.GetValue<string>(),
            ["input"] = new JsonArray(new JsonObject { ["type"] = "function_call_output", ["call_id"] = call["call_id"]!.GetValue<string>(), ["output"] = "18C and sunny" }),
        });
        Assert.Contains("18C and sunny", second!["output"]![0]!["content"]![0]!["text"]!.GetValue<string>());

        var (s, streamed, _) = await Post(h, new JsonObject { ["model"] = "gpt-4o", ["input"] = "Weather?", ["tools"] = tools.DeepClone(), ["stream"] = true });
        var events = Events(streamed!.GetValue<string>());
        var args = string.Concat(events.Where(e => e.Event == "response.function_call_arguments.delta").Select(e => e.Data["delta"]!.GetValue<string>()));
        Assert.Equal(events.Single(e => e.Event == "response.function_call_arguments.done").Data["arguments"]!.GetValue<string>(), args);
    }

    [Fact]
    public async Task Reasoning_models_bill_reasoning_tokens_inside_output_and_others_reject_the_parameter()
    {
        using var h = new SimulatorHarness();
        var (_, body, _) = await Post(h, new JsonObject { ["model"] = "gpt-5", ["input"] = "Think", ["reasoning"] = new JsonObject { ["effort"] = "high" } });
        var u = body!["usage"]!;
        Assert.Equal(256, u["output_tokens_details"]!["reasoning_tokens"]!.GetValue<long>());
        Assert.True(u["output_tokens"]!.GetValue<long>() > 256);
        Assert.Equal("reasoning", body["output"]![0]!["type"]!.GetValue<string>());
        var (status, error, _) = await Post(h, new JsonObject { ["model"] = "gpt-4o", ["input"] = "Think", ["reasoning"] = new JsonObject { ["effort"] = "high" } });
        Assert.Equal(400, status);
        Assert.Equal("reasoning.effort", error!["error"]!["param"]!.GetValue<string>());
    }

    [Fact]
    public async Task Text_format_json_schema_answers_json_that_fits_the_schema()
    {
        using var h = new SimulatorHarness();
        var (_, body, _) = await Post(h, new JsonObject
        {
            ["model"] = "gpt-4o-mini", ["input"] = "Extract",
            ["text"] = new JsonObject { ["format"] = new JsonObject { ["type"] = "json_schema", ["name"] = "person", ["schema"] = JsonNode.Parse("""{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}""") } },
        });
        var json = JsonNode.Parse(body!["output"]![0]!["content"]![0]!["text"]!.GetValue<string>())!;
        Assert.Equal(42, json["age"]!.GetValue<int>());
        Assert.Equal("json_schema", body["text"]!["format"]!["type"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("""{"model":"gpt-4o","input":5}""", "input")]
    [InlineData("""{"model":"gpt-4o","input":[{"role":"robot","content":"x"}]}""", "input[0].role")]
    [InlineData("""{"model":"gpt-4o","input":"x","max_output_tokens":3}""", "max_output_tokens")]
    [InlineData("""{"model":"gpt-4o","input":"x","tools":[{"type":"function","function":{"name":"f"}}]}""", "tools[0].name")]
    [InlineData("""{"model":"gpt-4o","input":"x","text":{"format":{"type":"json_schema","schema":{}}}}""", "text.format.name")]
    [InlineData("""{"model":"gpt-4o","messages":[]}""", "messages")]
    public async Task Bad_bodies_get_a_400_naming_the_field(string json, string param)
    {
        using var h = new SimulatorHarness();
        var (status, body, _) = await Post(h, (JsonObject)JsonNode.Parse(json)!);
        Assert.Equal(400, status);
        Assert.Equal(param, body!["error"]!["param"]!.GetValue<string>());
    }

    [Fact]
    public async Task Embeddings_take_tokens_dimensions_and_base64()
    {
        using var h = new SimulatorHarness();
        var (_, floats, _) = await h.PostAsync("/v1/embeddings", new JsonObject { ["model"] = "text-embedding-3-small", ["input"] = "hello world", ["dimensions"] = 64 }, anthropic: false);
        var vector = floats!["data"]![0]!["embedding"]!.AsArray().Select(f => f!.GetValue<float>()).ToArray();
        Assert.Equal(64, vector.Length);
        var (_, b64, _) = await h.PostAsync("/v1/embeddings", new JsonObject { ["model"] = "text-embedding-3-small", ["input"] = "hello world", ["dimensions"] = 64, ["encoding_format"] = "base64" }, anthropic: false);
        var bytes = Convert.FromBase64String(b64!["data"]![0]!["embedding"]!.GetValue<string>());
        Assert.Equal(vector, Enumerable.Range(0, 64).Select(i => BitConverter.ToSingle(bytes, i * 4)));
        Assert.Equal(floats["usage"]!["prompt_tokens"]!.GetValue<long>(), b64["usage"]!["prompt_tokens"]!.GetValue<long>());
        var (_, tokens, _) = await h.PostAsync("/v1/embeddings", new JsonObject { ["model"] = "text-embedding-3-small", ["input"] = new JsonArray(new JsonArray(1, 2, 3), new JsonArray(4)) }, anthropic: false);
        Assert.Equal(4, tokens!["usage"]!["prompt_tokens"]!.GetValue<long>());
        var (status, error, _) = await h.PostAsync("/v1/embeddings", new JsonObject { ["model"] = "text-embedding-3-small", ["input"] = new JsonArray("ok", "") }, anthropic: false);
        Assert.Equal(400, status);
        Assert.Equal("input[1]", error!["error"]!["param"]!.GetValue<string>());
    }
}
