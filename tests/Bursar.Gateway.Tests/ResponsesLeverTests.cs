using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Tests;

/// <summary>A scripted Responses upstream on a loopback port (it answers with the usage a test sets and records what it got), behind a gateway with route policies.</summary>
public sealed class ResponsesUpstreamFixture : IAsyncLifetime
{
    private WebApplication? _upstream;
    public GatewayFixture Gateway { get; private set; } = null!;
    public Func<HttpContext, byte[], Task> Respond { get; set; } = (_, _) => Task.CompletedTask;
    public List<(string Path, byte[] Body)> Received { get; } = [];

    public async Task InitializeAsync()
    {
        var b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Logging.ClearProviders();
        _upstream = b.Build();
        _upstream.MapPost("/{**path}", async (HttpContext ctx) =>
        {
            using var ms = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(ms);
            lock (Received) Received.Add((ctx.Request.Path.Value!, ms.ToArray()));
            await Respond(ctx, ms.ToArray());
        });
        await _upstream.StartAsync();
        var url = _upstream.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Gateway = new ConfiguredGateway([$"--Bursar:Providers:Deployments:raw:BaseUrl={url}/v1", "--Bursar:Providers:Deployments:raw:ApiKey=sk-test",
            "--Bursar:Providers:Deployments:raw:Models:0=gpt-4o", "--Bursar:Providers:Deployments:raw:Models:1=gpt-4.1", "--Bursar:Providers:Deployments:raw:Models:2=gpt-5",
            "--Bursar:Providers:Deployments:raw:Models:3=gpt-4.1-mini", "--Bursar:Providers:Deployments:raw:MaxRetries=0",
            "--Bursar:Routing:Routes:0:Name=rs-capped", "--Bursar:Routing:Routes:0:Task=rs-capped", "--Bursar:Routing:Routes:0:MaxTokens=5",
            "--Bursar:Routing:Routes:1:Name=rs-cheap", "--Bursar:Routing:Routes:1:Task=rs-cheap", "--Bursar:Routing:Routes:1:Model=gpt-4.1-mini",
            "--Bursar:Routing:Routes:2:Name=rs-fallback", "--Bursar:Routing:Routes:2:Task=rs-fallback", "--Bursar:Routing:Routes:2:Model=gpt-4o", "--Bursar:Routing:Routes:2:Fallbacks:0=gpt-4.1"]);
        await Gateway.InitializeAsync();
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        if (_upstream is not null) await _upstream.DisposeAsync();
    }
}

/// <summary>Responses calls get every lever chat gets, and the cost of OpenAI's own usage, to the hand-computed cent.</summary>
public sealed class ResponsesLeverTests(ResponsesUpstreamFixture raw) : IClassFixture<ResponsesUpstreamFixture>
{
    private GatewayFixture Gw => raw.Gateway;

    private static string Usage(long input, long cached, long output, long reasoning) =>
        $$"""{"input_tokens":{{input}},"input_tokens_details":{"cached_tokens":{{cached}}},"output_tokens":{{output}},"output_tokens_details":{"reasoning_tokens":{{reasoning}}},"total_tokens":{{input + output}}}""";

    private static string Response(string model, string usage, string status = "completed") =>
        $$"""{"id":"resp_hand1","object":"response","created_at":1749761642,"status":"{{status}}","model":"{{model}}","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello there.","annotations":[]}]}],"usage":{{usage}},"store":true}""";

    private static Func<HttpContext, byte[], Task> Json(string body) => async (ctx, _) =>
    {
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(body);
    };

    private static Func<HttpContext, byte[], Task> Sse(string model, string usage, bool complete = true) => async (ctx, _) =>
    {
        ctx.Response.ContentType = "text/event-stream";
        var seq = 0;
        async Task Event(string type, JsonObject data)
        {
            var payload = new JsonObject { ["type"] = type, ["sequence_number"] = seq++ };
            foreach (var (k, v) in data) payload[k] = v?.DeepClone();
            await ctx.Response.WriteAsync($"event: {type}\ndata: {payload.ToJsonString()}\n\n");
            await ctx.Response.Body.FlushAsync();
        }
        JsonObject Resp(string status, JsonNode? u) => new() { ["id"] = "resp_hand2", ["object"] = "response", ["status"] = status, ["model"] = model, ["output"] = new JsonArray(), ["usage"] = u };
        await Event("response.created", new JsonObject { ["response"] = Resp("in_progress", null) });
        await Event("response.output_item.added", new JsonObject { ["output_index"] = 0, ["item"] = new JsonObject { ["id"] = "msg_1", ["type"] = "message", ["role"] = "assistant", ["content"] = new JsonArray() } });
        foreach (var delta in new[] { "Hello", " there." })
            await Event("response.output_text.delta", new JsonObject { ["item_id"] = "msg_1", ["output_index"] = 0, ["content_index"] = 0, ["delta"] = delta });
        if (!complete) return;
        await Event("response.completed", new JsonObject { ["response"] = Resp("completed", JsonNode.Parse(usage)) });
    };

    private async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> Post(string json, string feature, string? task = null)
    {
        using var req = Gw.Post("/v1/responses", json, feature: feature);
        if (task is not null) req.Headers.Add("x-bursar-task", task);
        var resp = await Gw.Http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp);
    }

    // the hand-computed vectors, USD per 1M tokens from the built-in prices:
    // gpt-4o in 2.50 / cached 1.25 / out 10: 2006 input of which 1920 cached, 300 out -> (86*2.5 + 1920*1.25 + 300*10) / 1e6
    // gpt-4.1 in 2 / cached 0.50 / out 8: 1200 of which 1024 cached, 50 out -> 0.001264 (CostCalculatorTests)
    // gpt-5 in 1.25 / out 10, reasoning billed as output: 100 in, 1000 out of which 800 reasoning -> (100*1.25 + 1000*10) / 1e6
    [Theory]
    [InlineData("gpt-4o", 2006, 1920, 300, 0, "0.005615", false)]
    [InlineData("gpt-4o", 2006, 1920, 300, 0, "0.005615", true)]
    [InlineData("gpt-4.1", 1200, 1024, 50, 0, "0.001264", false)]
    [InlineData("gpt-4.1", 1200, 1024, 50, 0, "0.001264", true)]
    [InlineData("gpt-5", 100, 0, 1000, 800, "0.010125", false)]
    [InlineData("gpt-5", 100, 0, 1000, 800, "0.010125", true)]
    public async Task Hand_computed_vectors_match_through_v1_responses(string model, long input, long cached, long output, long reasoning, string cost, bool stream)
    {
        var feature = $"rs-vec-{model}-{stream}";
        var usage = Usage(input, cached, output, reasoning);
        raw.Respond = stream ? Sse(model, usage) : Json(Response(model, usage));
        var body = $$"""{"model":"{{model}}","input":"Say hello","stream":{{(stream ? "true" : "false")}}}""";
        var (status, text, _) = await Post(body, feature);
        Assert.Equal(HttpStatusCode.OK, status);
        if (stream) Assert.EndsWith("\n\n", text);
        var row = Assert.Single(await Gw.LedgerAsync(feature));
        Assert.Equal(decimal.Parse(cost, System.Globalization.CultureInfo.InvariantCulture), row.Cost);
        Assert.Equal((input - cached, cached, output, reasoning), (row.InputTokens, row.CacheReadTokens, row.OutputTokens, row.ReasoningTokens));
        Assert.False(row.UsageEstimated);
        Assert.Equal(stream, row.Streamed);
        Assert.Equal("openai-responses", row.Dialect);
    }

    [Fact]
    public async Task Same_dialect_bytes_reach_the_upstream_untouched()
    {
        raw.Respond = Json(Response("gpt-4.1", Usage(10, 0, 3, 0)));
        var body = """{ "model":"gpt-4.1", "input":[{"role":"user","content":"hi"}], "x_unknown_field": {"kept": [1, 2.50, "three"]}, "truncation":"auto" }""";
        var (status, _, _) = await Post(body, "rs-bytes");
        Assert.Equal(HttpStatusCode.OK, status);
        var (path, sent) = raw.Received.Last();
        Assert.Equal("/v1/responses", path);
        Assert.Equal(body, Encoding.UTF8.GetString(sent));
    }

    [Fact]
    public async Task A_route_cap_edits_max_output_tokens_no_lower_than_the_api_minimum_and_admission_reserves_it()
    {
        raw.Respond = Json(Response("gpt-4.1", Usage(10, 0, 3, 0)));
        var (status, _, _) = await Post("""{"model":"gpt-4.1","input":"hi","max_output_tokens":500}""", "rs-cap", task: "rs-capped");
        Assert.Equal(HttpStatusCode.OK, status);
        var sent = JsonNode.Parse(raw.Received.Last().Body)!;
        Assert.Equal(16, sent["max_output_tokens"]!.GetValue<int>());
        Assert.Null(sent["stop"]); // the Responses API has no stop sequences
        Assert.Null(sent["max_completion_tokens"]);
    }

    [Fact]
    public async Task A_route_policy_serves_another_model_and_credits_the_routing_saving()
    {
        raw.Respond = (ctx, b) => Json(Response(JsonNode.Parse(b)!["model"]!.GetValue<string>(), Usage(1000, 0, 100, 0)))(ctx, b);
        var (status, text, _) = await Post("""{"model":"gpt-4.1","input":"hi"}""", "rs-route", task: "rs-cheap");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("gpt-4.1-mini", JsonNode.Parse(raw.Received.Last().Body)!["model"]!.GetValue<string>());
        var row = Assert.Single(await Gw.LedgerAsync("rs-route"));
        Assert.Equal("gpt-4.1-mini", row.ServedModel);
        Assert.Equal((1000 * 0.40m + 100 * 1.60m) / 1_000_000m, row.Cost);
        Assert.Equal((1000 * 2m + 100 * 8m) / 1_000_000m - row.Cost, row.SavingRouting);
        _ = text;
    }

    [Fact]
    public async Task A_failing_model_falls_back_along_the_route_with_the_responses_body()
    {
        raw.Respond = async (ctx, b) =>
        {
            var model = JsonNode.Parse(b)!["model"]!.GetValue<string>();
            if (model == "gpt-4o")
            {
                ctx.Response.StatusCode = 503;
                ctx.Response.ContentType = "application/json";
                await ctx.Response.WriteAsync("""{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}""");
                return;
            }
            await Json(Response(model, Usage(100, 0, 10, 0)))(ctx, b);
        };
        var (status, _, _) = await Post("""{"model":"gpt-4.1","input":"hi"}""", "rs-fallback", task: "rs-fallback");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("/v1/responses", raw.Received.Last().Path);
        var row = Assert.Single(await Gw.LedgerAsync("rs-fallback"));
        Assert.Equal("gpt-4.1", row.ServedModel);
        Assert.Equal((100 * 2m + 10 * 8m) / 1_000_000m, row.Cost);
    }

    [Fact]
    public async Task An_identical_temperature_zero_responses_call_is_an_exact_cache_hit_at_no_cost()
    {
        var calls = 0;
        raw.Respond = (ctx, b) => { Interlocked.Increment(ref calls); return Json(Response("gpt-4.1", Usage(1200, 1024, 50, 0)))(ctx, b); };
        const string body = """{"model":"gpt-4.1","input":"What is 2+2?","temperature":0}""";
        var (s1, t1, _) = await Post(body, "rs-exact");
        var (s2, t2, r2) = await Post(body, "rs-exact");
        Assert.Equal((HttpStatusCode.OK, HttpStatusCode.OK), (s1, s2));
        Assert.Equal(t1, t2);
        Assert.Equal("hit", r2.Headers.GetValues("x-bursar-cache").Single());
        Assert.Equal(1, calls);
        var rows = (await Gw.LedgerAsync("rs-exact", 2)).OrderBy(r => r.Timestamp).ToArray();
        Assert.Equal(0.001264m, rows[0].Cost);
        Assert.Equal(0m, rows[1].Cost);
        Assert.Equal(0.001264m, rows[1].SavingResponseCache);
    }

    [Fact]
    public async Task A_budget_refuses_a_responses_call_with_the_openai_429()
    {
        const string customer = "rs-budget-cust";
        var key = await Gw.CreateKeyAsync(team: null, customer: customer);
        var (bs, _) = await Gw.AdminAsync(HttpMethod.Put, "/admin/budgets/" + customer, new { scope = "customer", value = customer, period = "month", limit_usd = 0m });
        Assert.Equal(HttpStatusCode.OK, bs);
        using var req = Gw.Post("/v1/responses", """{"model":"gpt-4.1","input":"hi"}""", key: key, feature: "rs-budget");
        using var resp = await Gw.Http.SendAsync(req);
        Assert.Equal(HttpStatusCode.TooManyRequests, resp.StatusCode);
        Assert.Equal("budget_exceeded", JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_stream_cut_before_response_completed_is_estimated_never_zero_and_ends_with_an_error_event()
    {
        raw.Respond = Sse("gpt-4.1", Usage(0, 0, 0, 0), complete: false);
        var (status, text, _) = await Post("""{"model":"gpt-4.1","input":"a question that gets a cut answer","stream":true}""", "rs-cut");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Contains("event: error\ndata: {\"type\":\"error\"", text);
        var row = Assert.Single(await Gw.LedgerAsync("rs-cut"));
        Assert.True(row.UsageEstimated);
        Assert.True(row.Cost > 0);
        Assert.True(row.InputTokens > 0 && row.OutputTokens > 0);
        Assert.Equal("upstream_error", row.Outcome);
    }

    [Fact]
    public async Task A_chained_call_served_elsewhere_reserves_the_models_context_window()
    {
        // a previous_response_id this gateway never served: its stored context is unknown, so the reservation is the whole window
        const string customer = "rs-window-cust";
        var key = await Gw.CreateKeyAsync(team: null, customer: customer);
        // gpt-4.1's 1,047,576-token window at $2/M is about $2.10 of input alone: a $1 budget cannot hold it
        await Gw.AdminAsync(HttpMethod.Put, "/admin/budgets/" + customer, new { scope = "customer", value = customer, period = "month", limit_usd = 1m });
        using var req = Gw.Post("/v1/responses", """{"model":"gpt-4.1","input":"continue","previous_response_id":"resp_from_elsewhere"}""", key: key, feature: "rs-window");
        using var resp = await Gw.Http.SendAsync(req);
        Assert.Equal(HttpStatusCode.TooManyRequests, resp.StatusCode);
        using var plain = Gw.Post("/v1/responses", """{"model":"gpt-4.1","input":"hi"}""", key: key, feature: "rs-window");
        raw.Respond = Json(Response("gpt-4.1", Usage(10, 0, 3, 0)));
        using var ok = await Gw.Http.SendAsync(plain);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }
}
