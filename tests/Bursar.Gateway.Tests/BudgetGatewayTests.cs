using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>Budgets, rate limits and run caps hold on every path: both dialects, streamed or not, under concurrency.</summary>
[Collection(GatewayCollection.Name)]
public sealed class BudgetGatewayTests(GatewayFixture gw)
{
    private static string Anthropic(string model, int maxTokens, string text, bool stream = false) =>
        new JsonObject { ["model"] = model, ["max_tokens"] = maxTokens, ["stream"] = stream, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) }.ToJsonString();

    private static string OpenAI(string model, int maxTokens, string text, bool stream = false, bool tools = false)
    {
        var o = new JsonObject { ["model"] = model, ["max_completion_tokens"] = maxTokens, ["stream"] = stream, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) };
        if (tools) o["tools"] = JsonNode.Parse("""[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"}},"required":["q"]}}}]""");
        return o.ToJsonString();
    }

    private async Task<(HttpStatusCode Status, string Text, HttpResponseMessage Resp)> Call(string path, string json, string key, string feature, Action<HttpRequestMessage>? edit = null)
    {
        using var req = gw.Post(path, json, key, feature);
        edit?.Invoke(req);
        var resp = await gw.Http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp);
    }

    private async Task Budget(string id, object body)
    {
        var (status, resp) = await gw.AdminAsync(HttpMethod.Put, "/admin/budgets/" + id, body);
        Assert.True(status == HttpStatusCode.OK, $"{status} {resp}");
    }

    [Fact]
    public async Task Two_hundred_parallel_calls_never_overspend_a_one_dollar_customer_budget()
    {
        var key = await gw.CreateKeyAsync(team: "load", customer: "cust-200");
        await Budget("cust-200", new { scope = "customer", value = "cust-200", period = "month", limit_usd = 1.00m });
        // each call: ~3,000 output tokens of Haiku ($0.015), worst case 4,000 ($0.02): $3 of demand against $1
        var json = Anthropic("claude-haiku-4-5", 4000, "write a long report [[sim:tokens=3000]]");
        var results = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
        {
            var (status, text, resp) = await Call("/v1/messages", json, key, "budget-200");
            resp.Dispose();
            return (status, text);
        }));
        var ok = results.Count(r => r.status == HttpStatusCode.OK);
        var refused = results.Where(r => r.status == HttpStatusCode.TooManyRequests).ToArray();
        Assert.Equal(200, ok + refused.Length);
        Assert.InRange(ok, 30, 70);
        Assert.All(refused, r =>
        {
            var e = JsonNode.Parse(r.text)!;
            Assert.Equal("budget_exceeded", e["error"]!["type"]!.GetValue<string>());
            Assert.Contains("customer 'cust-200' month budget of $1.00", e["error"]!["message"]!.GetValue<string>(), StringComparison.OrdinalIgnoreCase);
        });
        var rows = await gw.LedgerAsync("budget-200", 200);
        var admitted = rows.Where(r => r.Outcome == "ok").ToArray();
        Assert.Equal(ok, admitted.Length); // every admitted call is in the ledger
        Assert.Equal(refused.Length, rows.Count(r => r.Outcome == "refused" && r.ErrorType == "budget_exceeded"));
        var spent = admitted.Sum(r => r.Cost!.Value);
        Assert.True(spent <= 1.00m, $"settled spend {spent}");
        var (_, budgets) = await gw.AdminAsync(HttpMethod.Get, "/admin/budgets");
        var b = budgets!.AsArray().Single(x => x!["id"]!.GetValue<string>() == "cust-200")!;
        Assert.Equal(spent, b["spent_usd"]!.GetValue<decimal>());
        Assert.Equal(0m, b["reserved_usd"]!.GetValue<decimal>());
        Assert.True(b["soft_limit_reached"]!.GetValue<bool>());
    }

    [Theory]
    [InlineData("/v1/chat/completions", false)]
    [InlineData("/v1/chat/completions", true)]
    [InlineData("/v1/messages", false)]
    [InlineData("/v1/messages", true)]
    public async Task An_exhausted_budget_refuses_in_the_callers_dialect_streamed_or_not(string path, bool stream)
    {
        var customer = "cust-zero-" + Guid.NewGuid().ToString("N")[..6];
        var key = await gw.CreateKeyAsync(team: null, customer: customer);
        await Budget(customer, new { scope = "customer", value = customer, period = "day", limit_usd = 0.0001m, time_zone = "Europe/Paris" });
        var json = path == "/v1/messages" ? Anthropic("claude-sonnet-4-5", 1000, "hi", stream) : OpenAI("gpt-4o", 1000, "hi", stream);
        var (status, text, resp) = await Call(path, json, key, "budget-dialects");
        Assert.Equal(HttpStatusCode.TooManyRequests, status);
        var e = JsonNode.Parse(text)!;
        if (path == "/v1/messages") Assert.Equal("error", e["type"]!.GetValue<string>());
        else Assert.Equal("budget_exceeded", e["error"]!["code"]!.GetValue<string>());
        Assert.Equal("budget_exceeded", e["error"]!["type"]!.GetValue<string>());
        var message = e["error"]!["message"]!.GetValue<string>();
        Assert.Contains("$0.0001", message);
        Assert.Contains("resets at", message);
        Assert.Contains(customer, message);
        Assert.True(resp.Headers.RetryAfter is not null);
    }

    [Fact]
    public async Task A_key_policy_can_downgrade_to_a_cheaper_model_and_the_ledger_says_so()
    {
        var customer = "cust-down";
        var key = await gw.CreateKeyAsync(team: null, customer: customer, downgradeModel: "gpt-4o-mini");
        await Budget(customer, new { scope = "customer", value = customer, period = "month", limit_usd = 0.01m });
        var (status, text, _) = await Call("/v1/chat/completions", OpenAI("gpt-4o", 2000, "expensive question"), key, "budget-downgrade");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.StartsWith("gpt-4o-mini", JsonNode.Parse(text)!["model"]!.GetValue<string>());
        var r = Assert.Single(await gw.LedgerAsync("budget-downgrade"));
        Assert.Equal("gpt-4o", r.RequestedModel);
        Assert.Equal("gpt-4o-mini", r.ServedModel);
        Assert.StartsWith("budget_downgrade", r.RoutingReason);
    }

    [Fact]
    public async Task Free_models_never_consume_budget_and_unpriced_ones_follow_the_key_policy()
    {
        var customer = "cust-free";
        var allow = await gw.CreateKeyAsync(team: null, customer: customer);
        var refuse = await gw.CreateKeyAsync(team: null, customer: customer, unpricedPolicy: "refuse");
        await Budget(customer, new { scope = "customer", value = customer, period = "month", limit_usd = 0m });
        Assert.Equal(HttpStatusCode.TooManyRequests, (await Call("/v1/chat/completions", OpenAI("gpt-4o-mini", 10, "hi"), allow, "budget-free")).Status);
        Assert.Equal(HttpStatusCode.OK, (await Call("/v1/chat/completions", OpenAI("gpt-local-free", 10, "hi"), allow, "budget-free")).Status);
        Assert.Equal(HttpStatusCode.OK, (await Call("/v1/chat/completions", OpenAI("gpt-unpriced-x", 10, "hi"), allow, "budget-free")).Status);
        var (status, text, _) = await Call("/v1/chat/completions", OpenAI("gpt-unpriced-x", 10, "hi"), refuse, "budget-free");
        Assert.Equal(HttpStatusCode.Forbidden, status);
        Assert.Contains("no price", JsonNode.Parse(text)!["error"]!["message"]!.GetValue<string>());
        var rows = await gw.LedgerAsync("budget-free", 4);
        Assert.Contains(rows, r => r.ServedModel == "gpt-local-free" && r.Cost == 0m && r.Priced);
        Assert.Contains(rows, r => r.ServedModel == "gpt-unpriced-x" && r.Outcome == "ok" && !r.Priced && r.Cost is null);
    }

    [Fact]
    public async Task A_dropped_stream_settles_its_reservation_to_what_was_used()
    {
        var customer = "cust-drop";
        var key = await gw.CreateKeyAsync(team: null, customer: customer);
        await Budget(customer, new { scope = "customer", value = customer, period = "month", limit_usd = 5m });
        gw.Simulator.Options.TokensPerSecond = 50;
        try
        {
            using var req = gw.Post("/v1/messages", Anthropic("claude-sonnet-4-5", 4000, "long one [[sim:tokens=400]]", stream: true), key, "budget-drop");
            using (var resp = await gw.Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead))
            {
                using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
                var deltas = 0;
                string? line;
                while ((line = await reader.ReadLineAsync()) is not null && deltas < 5) if (line.Contains("content_block_delta")) deltas++;
            }
            var r = Assert.Single(await gw.LedgerAsync("budget-drop"));
            Assert.Equal("canceled", r.Outcome);
            Assert.InRange(r.OutputTokens, 5, 399);
            Assert.Contains("estimated", r.ErrorMessage);
            var (_, budgets) = await gw.AdminAsync(HttpMethod.Get, "/admin/budgets");
            var b = budgets!.AsArray().Single(x => x!["id"]!.GetValue<string>() == customer)!;
            Assert.Equal(0m, b["reserved_usd"]!.GetValue<decimal>());
            Assert.Equal(r.Cost, b["spent_usd"]!.GetValue<decimal>());
        }
        finally
        {
            gw.Simulator.Options.TokensPerSecond = 0;
        }
    }

    [Fact]
    public async Task Rate_limits_answer_429_with_retry_after_in_both_dialects()
    {
        var key = await gw.CreateKeyAsync(team: null);
        var (status, body) = await gw.AdminAsync(HttpMethod.Put, $"/admin/rate-limits/key/{await gw.KeyIdAsync(key)}", new { requests_per_minute = 2 });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(HttpStatusCode.OK, (await Call("/v1/chat/completions", OpenAI("gpt-4o-mini", 10, "a"), key, "rl")).Status);
        Assert.Equal(HttpStatusCode.OK, (await Call("/v1/messages", Anthropic("claude-haiku-4-5", 10, "b"), key, "rl")).Status);
        var (s3, t3, r3) = await Call("/v1/messages", Anthropic("claude-haiku-4-5", 10, "c"), key, "rl");
        Assert.Equal(HttpStatusCode.TooManyRequests, s3);
        Assert.Equal("rate_limit_error", JsonNode.Parse(t3)!["error"]!["type"]!.GetValue<string>());
        Assert.Contains("2 requests per minute", JsonNode.Parse(t3)!["error"]!["message"]!.GetValue<string>());
        Assert.True(r3.Headers.RetryAfter!.Delta > TimeSpan.Zero);
        var (s4, t4, _) = await Call("/v1/chat/completions", OpenAI("gpt-4o-mini", 10, "d"), key, "rl");
        Assert.Equal(HttpStatusCode.TooManyRequests, s4);
        Assert.Equal("rate_limit_exceeded", JsonNode.Parse(t4)!["error"]!["code"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_run_ends_when_the_assistant_answers_without_tools_and_further_calls_are_refused()
    {
        var key = await gw.CreateKeyAsync(team: null);
        void Run(HttpRequestMessage r) => r.Headers.Add("x-bursar-run", "run-done");
        Assert.Equal(HttpStatusCode.OK, (await Call("/v1/chat/completions", OpenAI("gpt-4o", 100, "use the tool", tools: true), key, "runs", Run)).Status);
        Assert.Equal(HttpStatusCode.OK, (await Call("/v1/chat/completions", OpenAI("gpt-4o", 100, "now answer"), key, "runs", Run)).Status);
        var (status, text, _) = await Call("/v1/messages", Anthropic("claude-haiku-4-5", 100, "more?"), key, "runs", Run);
        Assert.Equal(HttpStatusCode.TooManyRequests, status);
        var e = JsonNode.Parse(text)!["error"]!;
        Assert.Equal("run_limit_exceeded", e["type"]!.GetValue<string>());
        Assert.Contains("answered without a tool call", e["message"]!.GetValue<string>());
        var rows = await gw.LedgerAsync("runs", 3);
        Assert.Single(rows, r => r.RunEndReason == "done: answered without a tool call");
        Assert.Single(rows, r => r.Outcome == "refused" && r.ErrorType == "run_limit_exceeded");
    }

    [Fact]
    public async Task A_run_is_capped_at_its_maximum_turns()
    {
        var key = await gw.CreateKeyAsync(team: null);
        void Run(HttpRequestMessage r) => r.Headers.Add("x-bursar-run", "run-turns");
        for (var i = 0; i < 4; i++)
            Assert.Equal(HttpStatusCode.OK, (await Call("/v1/chat/completions", OpenAI("gpt-4o", 100, "step " + i, tools: true), key, "run-turns", Run)).Status);
        var (status, text, _) = await Call("/v1/chat/completions", OpenAI("gpt-4o", 100, "step 5", stream: true, tools: true), key, "run-turns", Run);
        Assert.Equal(HttpStatusCode.TooManyRequests, status);
        Assert.Contains("max_turns (4)", text);
    }

    [Fact]
    public async Task The_admin_api_needs_its_key_and_answers_problem_details()
    {
        var (s1, b1) = await gw.AdminAsync(HttpMethod.Get, "/admin/budgets", adminKey: "wrong");
        Assert.Equal(HttpStatusCode.Unauthorized, s1);
        Assert.Equal(401, b1!["status"]!.GetValue<int>());
        var (s2, b2) = await gw.AdminAsync(HttpMethod.Put, "/admin/budgets/bad", new { scope = "team", period = "day", limit_usd = 5 });
        Assert.Equal(HttpStatusCode.BadRequest, s2);
        Assert.Contains("needs a value", b2!["detail"]!.GetValue<string>());
        var (s3, b3) = await gw.AdminAsync(HttpMethod.Put, "/admin/budgets/badtz", new { scope = "global", period = "day", limit_usd = 5, time_zone = "Nowhere/City" });
        Assert.Equal(HttpStatusCode.BadRequest, s3);
        Assert.Contains("Nowhere/City", b3!["detail"]!.GetValue<string>());
        var (s4, b4) = await gw.AdminAsync(HttpMethod.Post, "/admin/keys", new { team = "ops", requests_per_minute = 60 });
        Assert.Equal(HttpStatusCode.Created, s4);
        Assert.StartsWith("bsr_", b4!["secret"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NotFound, (await gw.AdminAsync(HttpMethod.Post, "/admin/budgets/nope/reset")).Status);
    }
}
