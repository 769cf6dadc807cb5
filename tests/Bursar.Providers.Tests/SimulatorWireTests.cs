using System.Text.Json.Nodes;
using Bursar.Providers.Simulator;

namespace Bursar.Providers.Tests;

public sealed class SimulatorWireTests
{
    private static JsonObject Hello(string model = "claude-sonnet-4-5", bool stream = false) => new()
    {
        ["model"] = model,
        ["max_tokens"] = 200,
        ["stream"] = stream,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Hello there" }),
    };

    [Fact]
    public async Task Answers_are_deterministic_with_real_usage()
    {
        using var h = new SimulatorHarness();
        var a = (await h.Messages(Hello())).Body!;
        var b = (await h.Messages(Hello())).Body!;
        Assert.Equal(a["content"]![0]!["text"]!.GetValue<string>(), b["content"]![0]!["text"]!.GetValue<string>());
        Assert.Equal("end_turn", a["stop_reason"]!.GetValue<string>());
        Assert.True(a["usage"]!["output_tokens"]!.GetValue<long>() > 0);
        Assert.True(a["usage"]!["input_tokens"]!.GetValue<long>() > 0);
    }

    [Fact]
    public async Task Anthropic_stream_has_the_exact_event_order()
    {
        using var h = new SimulatorHarness();
        var text = (await h.Messages(Hello(stream: true))).Body!.GetValue<string>();
        var events = text.Split('\n').Where(l => l.StartsWith("event: ")).Select(l => l[7..]).ToList();
        Assert.Equal("message_start", events[0]);
        Assert.Equal("content_block_start", events[1]);
        Assert.Equal("message_stop", events[^1]);
        Assert.Equal("message_delta", events[^2]);
        Assert.Equal("content_block_stop", events[^3]);
        Assert.Contains("content_block_delta", events);
    }

    [Fact]
    public async Task Max_tokens_truncates_with_the_right_stop_reason()
    {
        using var h = new SimulatorHarness();
        var body = Hello();
        body["max_tokens"] = 3;
        var r = (await h.Messages(body)).Body!;
        Assert.Equal("max_tokens", r["stop_reason"]!.GetValue<string>());
        Assert.True(r["usage"]!["output_tokens"]!.GetValue<long>() <= 3);
    }

    [Fact]
    public async Task Stop_sequences_cut_the_answer()
    {
        using var h = new SimulatorHarness();
        var full = (await h.Messages(Hello())).Body!["content"]![0]!["text"]!.GetValue<string>();
        var word = full.Split(' ')[2];
        var body = Hello();
        body["stop_sequences"] = new JsonArray(" " + word);
        var r = (await h.Messages(body)).Body!;
        Assert.Equal("stop_sequence", r["stop_reason"]!.GetValue<string>());
        Assert.Equal(" " + word, r["stop_sequence"]!.GetValue<string>());
        Assert.DoesNotContain(" " + word, r["content"]![0]!["text"]!.GetValue<string>());
    }

    [Fact]
    public async Task Tools_produce_a_tool_call_from_the_schema_then_an_answer_from_the_result()
    {
        using var h = new SimulatorHarness();
        var body = Hello();
        body["tools"] = new JsonArray(new JsonObject
        {
            ["name"] = "get_weather",
            ["input_schema"] = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["city"] = new JsonObject { ["type"] = "string" } }, ["required"] = new JsonArray("city") },
        });
        var r = (await h.Messages(body)).Body!;
        Assert.Equal("tool_use", r["stop_reason"]!.GetValue<string>());
        var use = r["content"]![0]!;
        Assert.Equal("get_weather", use["name"]!.GetValue<string>());
        Assert.Equal("Paris", use["input"]!["city"]!.GetValue<string>());

        var messages = (JsonArray)body["messages"]!;
        messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(use.DeepClone()) });
        messages.Add(new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = use["id"]!.DeepClone(), ["content"] = "18C and sunny" }) });
        var answer = (await h.Messages(body)).Body!;
        Assert.Equal("end_turn", answer["stop_reason"]!.GetValue<string>());
        Assert.Contains("18C and sunny", answer["content"]![0]!["text"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("""{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}""", "max_tokens: Field required")]
    [InlineData("""{"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}""", "model: Field required")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"bot","content":"hi"}]}""", "messages.0.role")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}""", "at least one message")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":"5","messages":[{"role":"user","content":"hi"}]}""", "max_tokens")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":5,"temperature":3,"messages":[{"role":"user","content":"hi"}]}""", "temperature")]
    public async Task Anthropic_validation_errors_name_the_field(string json, string expected)
    {
        using var h = new SimulatorHarness();
        var (status, body, _) = await h.Messages((JsonObject)JsonNode.Parse(json)!);
        Assert.Equal(400, status);
        Assert.Equal("error", body!["type"]!.GetValue<string>());
        Assert.Contains(expected, body["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task OpenAI_reasoning_models_reject_max_tokens_like_the_provider()
    {
        using var h = new SimulatorHarness();
        var (status, body, _) = await h.Chat(new JsonObject { ["model"] = "gpt-5", ["max_tokens"] = 10, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) });
        Assert.Equal(400, status);
        Assert.Equal("unsupported_parameter", body!["error"]!["code"]!.GetValue<string>());
        Assert.Equal("max_tokens", body["error"]!["param"]!.GetValue<string>());
    }

    [Fact]
    public async Task OpenAI_stream_with_include_usage_ends_with_a_usage_chunk_and_done()
    {
        using var h = new SimulatorHarness();
        var (_, body, _) = await h.Chat(new JsonObject
        {
            ["model"] = "gpt-4o-mini", ["stream"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true },
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }),
        });
        var data = body!.GetValue<string>().Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(f => f["data: ".Length..]).ToList();
        Assert.Equal("[DONE]", data[^1]);
        var usage = JsonNode.Parse(data[^2])!;
        Assert.Empty(usage["choices"]!.AsArray());
        Assert.True(usage["usage"]!["completion_tokens"]!.GetValue<long>() > 0);
        Assert.All(data.Take(data.Count - 2), d => Assert.Null(JsonNode.Parse(d)!["usage"]));
    }

    [Fact]
    public async Task Injected_faults_answer_in_the_providers_error_shape()
    {
        var opts = new SimulatorOptions();
        using var h = new SimulatorHarness(opts);
        opts.Faults.Enqueue(new SimulatorFault(429, RetryAfterSeconds: 7));
        var (status, body, resp) = await h.Messages(Hello());
        Assert.Equal(429, status);
        Assert.Equal("rate_limit_error", body!["error"]!["type"]!.GetValue<string>());
        Assert.Equal("7", resp.Headers.GetValues("retry-after").Single());

        opts.Faults.Enqueue(new SimulatorFault(529));
        Assert.Equal("overloaded_error", (await h.Messages(Hello())).Body!["error"]!["type"]!.GetValue<string>());

        var trigger = Hello();
        trigger["messages"]![0]!["content"] = "please [[sim:fault=500]]";
        var (s500, b500, _) = await h.Messages(trigger);
        Assert.Equal(500, s500);
        Assert.Equal("api_error", b500!["error"]!["type"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_midstream_fault_sends_an_error_event_after_http_200()
    {
        var opts = new SimulatorOptions();
        using var h = new SimulatorHarness(opts);
        opts.Faults.Enqueue(new SimulatorFault(200, MidStream: true));
        var (status, body, _) = await h.Messages(Hello(stream: true));
        Assert.Equal(200, status);
        var text = body!.GetValue<string>();
        Assert.Contains("event: error", text);
        Assert.Contains("overloaded_error", text);
        Assert.DoesNotContain("message_stop", text);
    }

    [Fact]
    public async Task Latency_settings_delay_the_first_token()
    {
        var opts = new SimulatorOptions { TimeToFirstToken = TimeSpan.FromSeconds(2) };
        using var h = new SimulatorHarness(opts);
        var call = h.Messages(Hello());
        await Task.Delay(100);
        Assert.False(call.IsCompleted); // fake time has not moved: no first token
        // advance until the call completes: on a loaded machine the simulator may not have started its delay when time first moves
        for (var i = 0; i < 50 && !call.IsCompleted; i++)
        {
            h.Time.Advance(TimeSpan.FromSeconds(2));
            await Task.WhenAny(call, Task.Delay(100));
        }
        var (status, _, _) = await call.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(200, status);
    }
}
