using System.Net;
using System.Text.Json.Nodes;
using Bursar.Providers.Simulator;

namespace Bursar.Gateway.Tests;

/// <summary>Every bad input gets the caller's dialect error shape with a message naming the problem; nothing gives a 500.</summary>
[Collection(GatewayCollection.Name)]
public sealed class BadInputTests(GatewayFixture gw)
{
    private async Task<(HttpStatusCode Status, JsonNode Body, HttpResponseMessage Response)> Send(string path, string json, string? key = null, string? feature = null, Action<HttpRequestMessage>? edit = null)
    {
        using var req = gw.Post(path, json, key, feature);
        edit?.Invoke(req);
        var resp = await gw.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, JsonNode.Parse(text)!, resp);
    }

    private static void OpenAIError(JsonNode body, string contains, string? param = null)
    {
        var e = body["error"]!;
        Assert.Contains(contains, e["message"]!.GetValue<string>());
        Assert.NotNull(e["type"]);
        if (param is not null) Assert.Equal(param, e["param"]!.GetValue<string>());
    }

    private static void AnthropicError(JsonNode body, string type, string contains)
    {
        Assert.Equal("error", body["type"]!.GetValue<string>());
        Assert.Equal(type, body["error"]!["type"]!.GetValue<string>());
        Assert.Contains(contains, body["error"]!["message"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("{\"model\": \"gpt-4o\", \"messages\": [", "not valid JSON", null)]
    [InlineData("[1,2,3]", "must be a JSON object", null)]
    [InlineData("{\"model\": 5, \"messages\": []}", "'model' must be a string", "model")]
    [InlineData("{\"messages\": [{\"role\":\"user\",\"content\":\"hi\"}]}", "'model' is required", "model")]
    [InlineData("{\"model\": \"gpt-4o\"}", "'messages' is required", "messages")]
    [InlineData("{\"model\": \"gpt-4o\", \"messages\": \"hi\"}", "'messages' must be an array", "messages")]
    [InlineData("{\"model\": \"gpt-4o\", \"messages\": [], \"stream\": \"yes\"}", "'stream' must be true or false", "stream")]
    [InlineData("{\"model\": \"gpt-4o\", \"messages\": [], \"max_tokens\": -1}", "'max_tokens' must be a non-negative integer", "max_tokens")]
    [InlineData("", "body is empty", null)]
    public async Task OpenAI_malformed_requests_get_a_400_naming_the_field(string json, string message, string? param)
    {
        var (status, body, _) = await Send("/v1/chat/completions", json, feature: "bad-oa");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        OpenAIError(body, message, param);
    }

    [Theory]
    [InlineData("{\"model\": \"claude-sonnet-4-5\", \"messages\": [{\"role\":\"user\",\"content\":\"hi\"}]}", "'max_tokens' is required")]
    [InlineData("{not json", "not valid JSON")]
    [InlineData("{\"model\": [\"x\"], \"max_tokens\": 5, \"messages\": []}", "'model' must be a string")]
    public async Task Anthropic_malformed_requests_get_the_anthropic_error_shape(string json, string message)
    {
        var (status, body, _) = await Send("/v1/messages", json);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        AnthropicError(body, "invalid_request_error", message);
    }

    [Fact]
    public async Task Deeper_field_errors_come_from_the_provider_in_its_own_shape()
    {
        var (status, body, _) = await Send("/v1/messages", """{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"robot","content":"hi"}]}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        AnthropicError(body, "invalid_request_error", "messages.0.role");
    }

    [Fact]
    public async Task Unknown_model_is_a_404_that_says_how_to_configure_it()
    {
        var (status, body, _) = await Send("/v1/chat/completions", """{"model":"llama-3-70b","messages":[{"role":"user","content":"hi"}]}""");
        Assert.Equal(HttpStatusCode.NotFound, status);
        OpenAIError(body, "llama-3-70b", "model");
        Assert.Equal("model_not_found", body["error"]!["code"]!.GetValue<string>());
        Assert.Contains("Bursar:Providers:Deployments", body["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task Oversize_body_is_a_413_naming_the_limit()
    {
        var big = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('a', 2 * 1024 * 1024) + "\"}]}";
        var (status, body, _) = await Send("/v1/chat/completions", big);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
        OpenAIError(body, "1048576");
        var (s2, b2, _) = await Send("/v1/messages", big);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, s2);
        AnthropicError(b2, "request_too_large", "1048576");
    }

    [Fact]
    public async Task Missing_bad_and_revoked_keys_are_401s_that_say_which()
    {
        using (var req = new HttpRequestMessage(HttpMethod.Post, "/v1/messages") { Content = new StringContent("{}") })
        {
            var resp = await gw.Http.SendAsync(req);
            Assert.Equal(HttpStatusCode.Unauthorized, resp.StatusCode);
            AnthropicError(JsonNode.Parse(await resp.Content.ReadAsStringAsync())!, "authentication_error", "Missing Bursar virtual key");
        }
        var (s1, b1, _) = await Send("/v1/chat/completions", "{}", key: "sk-proj-realopenaikey");
        Assert.Equal(HttpStatusCode.Unauthorized, s1);
        OpenAIError(b1, "Invalid Bursar virtual key 'sk-proj-real");

        var key = await gw.CreateKeyAsync(team: "t");
        var ok = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""";
        Assert.Equal(HttpStatusCode.OK, (await Send("/v1/chat/completions", ok, key: key)).Status);
        var keys = await gw.Store.ListAsync(default);
        var id = keys.Single(k => k.Hash == Bursar.Core.Keys.VirtualKey.HashSecret(key)).Id;
        Assert.True(await gw.Store.RevokeAsync(id, TimeProvider.System.GetUtcNow(), default));
        await Task.Delay(TimeSpan.FromSeconds(5.5)); // Bursar:KeyCacheDuration
        var (s2, b2, _) = await Send("/v1/chat/completions", ok, key: key);
        Assert.Equal(HttpStatusCode.Unauthorized, s2);
        OpenAIError(b2, "was revoked");
    }

    [Fact]
    public async Task A_tag_header_the_key_fixes_is_refused_naming_the_header()
    {
        var key = await gw.CreateKeyAsync(team: "support");
        var (status, body, _) = await Send("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""", key: key,
            edit: r => r.Headers.Add("x-bursar-team", "finance"));
        Assert.Equal(HttpStatusCode.Forbidden, status);
        OpenAIError(body, "x-bursar-team");
    }

    [Fact]
    public async Task Every_refusal_still_leaves_a_ledger_record()
    {
        await Send("/v1/chat/completions", "{\"model\": 5}", feature: "refusals");
        await Send("/v1/chat/completions", """{"model":"nope-model","messages":[]}""", feature: "refusals");
        var rows = await gw.LedgerAsync("refusals", 2);
        Assert.All(rows, r => Assert.Equal("client_error", r.Outcome));
        Assert.Contains(rows, r => r.StatusCode == 404 && r.RequestedModel == "nope-model");
    }

    [Fact]
    public async Task Upstream_529_is_retried_and_the_call_succeeds()
    {
        gw.Simulator.Options.Faults.Enqueue(new SimulatorFault(529));
        var (status, body, _) = await Send("/v1/messages", """{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"retry me [[sim:tag=r529]]"}]}""", feature: "retry");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("message", body["type"]!.GetValue<string>());
        Assert.Equal("ok", Assert.Single(await gw.LedgerAsync("retry")).Outcome);
    }

    [Fact]
    public async Task Upstream_429_after_retries_reaches_the_caller_with_retry_after_in_its_dialect()
    {
        gw.Simulator.Options.Faults.Enqueue(new SimulatorFault(429, RetryAfterSeconds: 0), 3);
        var (status, body, resp) = await Send("/v1/chat/completions", """{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"x"}]}""", feature: "ratelimited");
        Assert.Equal(HttpStatusCode.TooManyRequests, status);
        Assert.NotNull(body["error"]); // OpenAI shape although the upstream spoke Anthropic
        Assert.Contains("rate limit", body["error"]!["message"]!.GetValue<string>());
        Assert.True(resp.Headers.Contains("retry-after"));
        var r = Assert.Single(await gw.LedgerAsync("ratelimited"));
        Assert.Equal("upstream_error", r.Outcome);
        Assert.Equal(429, r.StatusCode);
    }

    [Fact]
    public async Task An_error_mid_stream_reaches_the_caller_and_the_ledger()
    {
        gw.Simulator.Options.Faults.Enqueue(new SimulatorFault(200, MidStream: true));
        using var req = gw.Post("/v1/messages", """{"model":"claude-haiku-4-5","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"go"}]}""", feature: "midstream");
        using var resp = await gw.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        Assert.Contains("event: error", text);
        var r = Assert.Single(await gw.LedgerAsync("midstream"));
        Assert.Equal("upstream_error", r.Outcome);
        Assert.Equal("overloaded_error", r.ErrorType);
        Assert.True(r.InputTokens > 0, "usage from message_start is kept");
    }

    [Fact]
    public async Task A_streaming_openai_caller_that_did_not_ask_for_usage_never_sees_the_usage_chunk_but_is_metered()
    {
        using var req = gw.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"stream it"}]}""", feature: "no-usage");
        using var resp = await gw.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        Assert.DoesNotContain("\"choices\":[]", text);
        Assert.DoesNotContain("\"prompt_tokens\"", text);
        Assert.EndsWith("data: [DONE]\n\n", text);
        var r = Assert.Single(await gw.LedgerAsync("no-usage"));
        Assert.True(r.InputTokens > 0 && r.OutputTokens > 0);
        Assert.True(r.Cost > 0);
    }

    [Fact]
    public async Task An_unpriced_model_is_recorded_as_unpriced_never_as_zero()
    {
        var (status, _, _) = await Send("/v1/chat/completions", """{"model":"gpt-9-preview","messages":[{"role":"user","content":"hi"}]}""", feature: "unpriced");
        Assert.Equal(HttpStatusCode.OK, status);
        var r = Assert.Single(await gw.LedgerAsync("unpriced"));
        Assert.False(r.Priced);
        Assert.Null(r.Cost);
        Assert.True(r.OutputTokens > 0);
        Assert.True(gw.Services.GetService(typeof(Bursar.Core.Metering.CallMeter)) is Bursar.Core.Metering.CallMeter m && m.UnpricedCalls >= 1);
    }

    [Fact]
    public async Task Unknown_paths_get_a_provider_shaped_404()
    {
        var resp = await gw.Http.GetAsync("/v1/embeddingz");
        Assert.Equal(HttpStatusCode.NotFound, resp.StatusCode);
        Assert.Contains("no endpoint", JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task Models_and_health_answer()
    {
        using var req = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        req.Headers.Authorization = new("Bearer", gw.Key);
        var models = JsonNode.Parse(await (await gw.Http.SendAsync(req)).Content.ReadAsStringAsync())!;
        Assert.Contains(models["data"]!.AsArray(), m => m!["id"]!.GetValue<string>() == "claude-sonnet-4-5");
        Assert.Equal(HttpStatusCode.OK, (await gw.Http.GetAsync("/health/live")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await gw.Http.GetAsync("/health/ready")).StatusCode);
    }

    [Theory]
    [InlineData("/v1/messages", """{"model":"claude-haiku-4-5","max_tokens":5,"model":"\ud800","messages":[{"role":"user","content":"hi"}]}""")]
    [InlineData("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"\ud800"}]}""")]
    [InlineData("/v1/chat/completions", """{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"a","content":"b"}]}""")]
    public async Task Lone_surrogates_and_duplicate_keys_are_400s_not_gateway_errors(string path, string json)
    {
        // found by the fuzz test: these used to escape as 502 "Bursar could not complete this call"
        var (status, body, _) = await Send(path, json);
        Assert.True((int)status is 200 or 400, $"{status}: {body}");
        if (status != HttpStatusCode.OK) Assert.DoesNotContain("could not complete", body["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_client_that_drops_a_stream_midway_is_recorded_as_canceled_with_the_usage_seen()
    {
        var options = gw.Simulator.Options;
        options.TokensPerSecond = 20;
        try
        {
            using var req = gw.Post("/v1/messages", """{"model":"claude-sonnet-4-5","max_tokens":400,"stream":true,"messages":[{"role":"user","content":"long answer please [[sim:tokens=200]]"}]}""", feature: "dropped");
            using (var resp = await gw.Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead))
            {
                using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
                string? line;
                while ((line = await reader.ReadLineAsync()) is not null && !line.Contains("content_block_delta")) { }
                Assert.NotNull(line);
            } // the caller goes away after the first delta
            var r = Assert.Single(await gw.LedgerAsync("dropped"));
            Assert.Equal("canceled", r.Outcome);
            Assert.True(r.Streamed);
            Assert.True(r.InputTokens > 0, "input tokens from message_start are kept");
            Assert.True(r.Cost > 0);
        }
        finally
        {
            options.TokensPerSecond = 0;
        }
    }
}
