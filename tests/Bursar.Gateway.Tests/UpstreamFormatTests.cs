using System.Text;
using Bursar.Core.Ledger;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Tests;

/// <summary>A scripted upstream (not the Simulator) on a loopback port, and a gateway whose deployment "raw" serves gpt-4o-mini from it.</summary>
public sealed class RawUpstreamFixture : IAsyncLifetime
{
    private WebApplication? _upstream;
    public GatewayFixture Gateway { get; private set; } = null!;
    public Func<HttpContext, Task> Respond { get; set; } = _ => Task.CompletedTask;

    public async Task InitializeAsync()
    {
        var b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Logging.ClearProviders();
        _upstream = b.Build();
        _upstream.MapPost("/{**path}", (HttpContext ctx) => Respond(ctx));
        await _upstream.StartAsync();
        var url = _upstream.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Gateway = new ConfiguredGateway([$"--Bursar:Providers:Deployments:raw:BaseUrl={url}/v1", "--Bursar:Providers:Deployments:raw:ApiKey=sk-test",
            "--Bursar:Providers:Deployments:raw:Models:0=gpt-4o-mini", "--Bursar:Providers:Deployments:raw:MaxRetries=0"]);
        await Gateway.InitializeAsync();
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        if (_upstream is not null) await _upstream.DisposeAsync();
    }
}

/// <summary>Upstream answers as other servers write them, cut off, or unreadable: never a silent $0 row, never a clean end of a broken stream.</summary>
public sealed class UpstreamFormatTests(RawUpstreamFixture raw) : IClassFixture<RawUpstreamFixture>
{
    private GatewayFixture Gw => raw.Gateway;

    // as a Python server (json.dumps defaults) writes them
    private static readonly string[] PythonFrames =
    [
        """{"id": "c9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}""",
        """{"id": "c9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "delta": {"content": "The capital of France is"}, "finish_reason": null}]}""",
        """{"id": "c9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "delta": {"content": " Paris, a city of museums."}, "finish_reason": null}]}""",
        """{"id": "c9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}""",
        """{"id": "c9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18", "choices": [], "usage": {"prompt_tokens": 4000, "completion_tokens": 9, "total_tokens": 4009}}""",
    ];

    private static Func<HttpContext, Task> Stream(int frames, bool done, bool drop) => async ctx =>
    {
        ctx.Response.ContentType = "text/event-stream";
        foreach (var f in PythonFrames.Take(frames))
        {
            await ctx.Response.WriteAsync("data: " + f + "\n\n");
            await ctx.Response.Body.FlushAsync();
        }
        if (drop)
        {
            await Task.Delay(50);
            ctx.Abort();
            return;
        }
        if (done) await ctx.Response.WriteAsync("data: [DONE]\n\n");
    };

    private static string OpenAIBody(bool stream) => $$"""{"model":"gpt-4o-mini","stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"{{new string('x', 3000)}} What is the capital of France?"}]}""";
    private const string AnthropicBody = """{"model":"gpt-4o-mini","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"What is the capital of France? Answer in one sentence please."}]}""";

    private async Task<(int Status, string Body, LedgerRecord Row)> Call(string path, string body, string feature)
    {
        using var req = Gw.Post(path, body, feature: feature);
        using var resp = await Gw.Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        string text;
        try { text = await resp.Content.ReadAsStringAsync(); }
        catch (HttpRequestException) { text = "<the gateway broke the stream>"; }
        var row = (await Gw.LedgerAsync(feature)).Single();
        return ((int)resp.StatusCode, text, row);
    }

    [Fact]
    public async Task Spaced_usage_from_a_python_server_is_metered_and_the_injected_usage_chunk_does_not_leak()
    {
        raw.Respond = Stream(5, done: true, drop: false);
        var (status, body, row) = await Call("/v1/chat/completions", OpenAIBody(stream: true), "fmt-spaced");
        Assert.Equal(200, status);
        Assert.DoesNotContain("prompt_tokens", body); // the caller did not ask for usage
        Assert.EndsWith("data: [DONE]\n\n", body);
        Assert.Equal("ok", row.Outcome);
        Assert.Equal(4000, row.InputTokens);
        Assert.Equal(9, row.OutputTokens);
        Assert.False(row.UsageEstimated);
        Assert.True(row.Priced);
        Assert.Equal(4000 * 0.15m / 1_000_000m + 9 * 0.60m / 1_000_000m, row.Cost);
    }

    [Fact]
    public async Task A_stream_dropped_midway_ends_with_an_error_frame_and_is_billed_as_a_flagged_estimate()
    {
        raw.Respond = Stream(3, done: false, drop: true);
        var (status, body, row) = await Call("/v1/chat/completions", OpenAIBody(stream: true), "fmt-dropped");
        Assert.Equal(200, status);
        Assert.Contains("data: {\"error\":{\"message\":\"The upstream connection dropped", body);
        Assert.DoesNotContain("data: [DONE]", body);
        Assert.Equal("upstream_error", row.Outcome);
        Assert.Equal("stream_interrupted", row.ErrorType);
        Assert.True(row.UsageEstimated);
        Assert.InRange(row.InputTokens, 900, 1200); // the pre-call estimate of ~3,000 bytes, not 0
        Assert.InRange(row.OutputTokens, 8, 14);   // the streamed text, tokenized
        Assert.True(row.Cost > 0m);
        Assert.Contains("estimated", row.ErrorMessage);
    }

    [Fact]
    public async Task A_translated_stream_dropped_midway_ends_with_an_anthropic_error_event()
    {
        raw.Respond = Stream(3, done: false, drop: true);
        var (_, body, row) = await Call("/v1/messages", AnthropicBody, "fmt-dropped-translated");
        Assert.Contains("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"", body);
        Assert.DoesNotContain("event: message_stop", body);
        var start = body.Split("\n\n")[0];
        Assert.StartsWith("event: message_start", start);
        Assert.DoesNotContain("\"input_tokens\":0", start); // the estimate, not 0
        Assert.Equal("upstream_error", row.Outcome);
        Assert.True(row.UsageEstimated);
        Assert.True(row.InputTokens > 0 && row.Cost > 0m);
    }

    [Fact]
    public async Task A_stream_that_ends_without_usage_is_an_upstream_error_at_an_estimated_cost()
    {
        raw.Respond = Stream(4, done: true, drop: false); // finishes, [DONE], but never sends the usage Bursar asked for
        var (_, body, row) = await Call("/v1/chat/completions", OpenAIBody(stream: true), "fmt-nousage");
        Assert.EndsWith("data: [DONE]\n\n", body);
        Assert.Equal("upstream_error", row.Outcome);
        Assert.Equal("usage_unreadable", row.ErrorType);
        Assert.True(row.UsageEstimated);
        Assert.True(row.Cost > 0m);
    }

    [Fact]
    public async Task A_200_in_the_other_dialect_is_a_502_naming_the_deployment_never_a_priced_zero()
    {
        raw.Respond = ctx =>
        {
            ctx.Response.ContentType = "application/json";
            return ctx.Response.WriteAsync("""{"id": "msg_1", "type": "message", "role": "assistant", "model": "gpt-4o-mini", "content": [{"type": "text", "text": "Paris."}], "usage": {"input_tokens": 20, "output_tokens": 3}}""");
        };
        var (status, body, row) = await Call("/v1/chat/completions", OpenAIBody(stream: false), "fmt-wrong-dialect");
        Assert.Equal(502, status);
        Assert.Contains("'raw'", System.Text.Json.Nodes.JsonNode.Parse(body)!["error"]!["message"]!.GetValue<string>());
        Assert.Equal("upstream_error", row.Outcome);
        Assert.Equal("usage_unreadable", row.ErrorType);
        Assert.True(row.UsageEstimated);
        Assert.True(row.Cost > 0m);
    }

    [Fact]
    public async Task A_json_answer_without_usage_reaches_the_caller_but_is_an_error_on_the_row()
    {
        raw.Respond = ctx =>
        {
            ctx.Response.ContentType = "application/json";
            return ctx.Response.WriteAsync("""{"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital of France."}, "finish_reason": "stop"}]}""");
        };
        var (status, body, row) = await Call("/v1/chat/completions", OpenAIBody(stream: false), "fmt-json-nousage");
        Assert.Equal(200, status);
        Assert.Contains("Paris", body);
        Assert.Equal("usage_unreadable", row.ErrorType);
        Assert.Equal("upstream_error", row.Outcome);
        Assert.True(row.UsageEstimated);
        Assert.InRange(row.OutputTokens, 5, 10);
        Assert.True(row.Cost > 0m);
    }

    [Fact]
    public async Task With_tracing_off_the_gateway_starts_no_activity_per_request_so_no_trace_header_reaches_the_upstream()
    {
        // ASP.NET Core starts an Activity per request while its hosting log category is enabled, and HttpClient then adds a
        // child one and a traceparent header to the upstream call: per-request work nobody reads when no exporter is set
        string? traceparent = "<not called>";
        raw.Respond = async ctx =>
        {
            traceparent = ctx.Request.Headers.TryGetValue("traceparent", out var v) ? v.ToString() : null;
            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync("""{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}""");
        };
        var (status, _, row) = await Call("/v1/chat/completions", OpenAIBody(stream: false), "fmt-no-trace");
        Assert.Equal(200, status);
        Assert.Equal("ok", row.Outcome);
        Assert.Null(traceparent);
    }
}
