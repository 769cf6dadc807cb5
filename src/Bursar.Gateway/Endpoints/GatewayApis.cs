using Bursar.Hosting;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Hosting;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Gateway.Endpoints;

/// <summary><c>POST /v1/chat/completions</c>: the OpenAI Chat Completions face.</summary>
public static class ChatCompletionsApi
{
    public static IEndpointRouteBuilder MapChatCompletionsApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/chat/completions", (HttpContext ctx, ProxyPipeline pipeline) => pipeline.HandleAsync(ctx, Dialect.OpenAI));
        return app;
    }
}

/// <summary><c>POST /v1/messages</c> and <c>POST /v1/messages/count_tokens</c>: the Anthropic Messages face.</summary>
public static class MessagesApi
{
    public static IEndpointRouteBuilder MapMessagesApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/messages", (HttpContext ctx, ProxyPipeline pipeline) => pipeline.HandleAsync(ctx, Dialect.Anthropic));
        app.MapPost("/v1/messages/count_tokens", CountTokensAsync);
        return app;
    }

    /// <summary>Answers from the local token counter (an estimate for Claude, exact tiktoken for OpenAI models); free, no upstream call.</summary>
    private static async Task CountTokensAsync(HttpContext ctx, KeyAuthenticator auth, PromptTokenEstimator estimator, BursarOptions options)
    {
        var (_, error) = await auth.AuthenticateAsync(ctx.Request, ctx.RequestAborted);
        if (error is not null)
        {
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.Anthropic, error);
            return;
        }
        if (ctx.Request.ContentLength > options.MaxRequestBodyBytes)
        {
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.Anthropic, ProviderError.TooLarge($"The request body is {ctx.Request.ContentLength} bytes; the limit is {options.MaxRequestBodyBytes}."));
            return;
        }
        using var ms = new MemoryStream();
        try
        {
            // read at most one byte past the limit: a chunked body has no length to refuse up front
            var chunk = new byte[16 * 1024];
            int read;
            while (ms.Length <= options.MaxRequestBodyBytes && (read = await ctx.Request.Body.ReadAsync(chunk, ctx.RequestAborted)) > 0) ms.Write(chunk, 0, read);
            if (ms.Length > RequestBody.MaxPooledBodyBytes) Bursar.Gateway.Proxy.LargeBodyMemoryTrim.LargeBodySeen();
        }
        catch (Exception e) when (e is BadHttpRequestException || (e is IOException && !ctx.RequestAborted.IsCancellationRequested))
        {
            // a malformed or truncated body (bad chunked framing, short Content-Length) is the caller's fault
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.Anthropic, RequestBody.UnreadableBody(e));
            return;
        }
        if (ms.Length > options.MaxRequestBodyBytes)
        {
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.Anthropic, ProviderError.TooLarge($"The request body exceeds the limit of {options.MaxRequestBodyBytes} bytes."));
            return;
        }
        var scan = RequestScan.Run(ms.GetBuffer().AsSpan(0, (int)ms.Length), Dialect.Anthropic, countTokens: true);
        if (scan.Error is not null)
        {
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.Anthropic, scan.Error);
            return;
        }
        long n;
        try
        {
            var body = CallerJson.Parse(ms.GetBuffer().AsSpan(0, (int)ms.Length));
            n = estimator.Estimate(scan.Model!, body, ctx.RequestAborted);
        }
        catch (JsonException e)
        {
            // e.g. a key twice inside a message: the parser names it
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.Anthropic, ProviderError.BadRequest($"The request body cannot be read: {e.Message}"));
            return;
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException)
        {
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.Anthropic, ProviderError.BadRequest($"The messages could not be read for counting: {e.Message}", "messages"));
            return;
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            return; // the caller went away: stop counting
        }
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync($"{{\"input_tokens\":{n}}}", ctx.RequestAborted);
    }
}

/// <summary><c>GET /v1/models</c>: the models the configured deployments serve, in the caller's dialect.</summary>
public static class ModelsApi
{
    public static IEndpointRouteBuilder MapModelsApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/models", async (HttpContext ctx, KeyAuthenticator auth, PriceCatalog catalog, UpstreamRegistry registry) =>
        {
            var anthropic = ctx.Request.Headers.ContainsKey("anthropic-version");
            var dialect = anthropic ? Dialect.Anthropic : Dialect.OpenAI;
            var (_, error) = await auth.AuthenticateAsync(ctx.Request, ctx.RequestAborted);
            if (error is not null)
            {
                await CallerAnswer.WriteErrorAsync(ctx, dialect, error);
                return;
            }
            var models = catalog.Models.Where(m => registry.Find(m.Model) is not null).ToArray();
            ctx.Response.ContentType = "application/json";
            await using var w = new Utf8JsonWriter(ctx.Response.Body);
            w.WriteStartObject();
            if (!anthropic) w.WriteString("object", "list");
            w.WriteStartArray("data");
            foreach (var m in models)
            {
                w.WriteStartObject();
                w.WriteString("id", m.Model);
                if (anthropic)
                {
                    w.WriteString("type", "model");
                    w.WriteString("display_name", m.Model);
                    w.WriteString("created_at", "2025-01-01T00:00:00Z");
                }
                else
                {
                    w.WriteString("object", "model");
                    w.WriteNumber("created", 1_735_689_600);
                    w.WriteString("owned_by", m.Provider);
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            if (anthropic)
            {
                w.WriteBoolean("has_more", false);
                if (models.Length > 0) { w.WriteString("first_id", models[0].Model); w.WriteString("last_id", models[^1].Model); }
            }
            w.WriteEndObject();
        });
        // anything else under /v1 gets a provider-shaped 404 naming the path
        app.Map("/v1/{**rest}", (HttpContext ctx) =>
        {
            var dialect = ctx.Request.Headers.ContainsKey("anthropic-version") || ctx.Request.Path.StartsWithSegments("/v1/messages") ? Dialect.Anthropic : Dialect.OpenAI;
            return CallerAnswer.WriteErrorAsync(ctx, dialect, new ProviderError(404, $"Bursar has no endpoint {ctx.Request.Method} {ctx.Request.Path}. It serves POST /v1/chat/completions, POST /v1/responses (and GET/DELETE /v1/responses/{{id}}, GET /v1/responses/{{id}}/input_items), POST /v1/embeddings, POST /v1/messages, POST /v1/messages/count_tokens and GET /v1/models."));
        });
        return app;
    }
}

public static class HealthApi
{
    public static IEndpointRouteBuilder MapHealthApi(this IEndpointRouteBuilder app)
    {
        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = c => c.Tags.Contains("live"), ResponseWriter = WriteJsonAsync });
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = c => c.Tags.Contains("ready"), ResponseWriter = WriteJsonAsync });
        return app;
    }

    /// <summary>
    /// <c>{"status":"Healthy","duration_ms":1.2,"checks":{"store":{"status":"Healthy","description":"...","duration_ms":0.4,"data":{...}},...}}</c>:
    /// every check with its own status, what it says and its figures (an error's message, never its stack).
    /// </summary>
    internal static async Task WriteJsonAsync(HttpContext ctx, Microsoft.Extensions.Diagnostics.HealthChecks.HealthReport report)
    {
        ctx.Response.ContentType = "application/json";
        await using var w = new System.Text.Json.Utf8JsonWriter(ctx.Response.Body);
        w.WriteStartObject();
        w.WriteString("status", report.Status.ToString());
        w.WriteNumber("duration_ms", Math.Round(report.TotalDuration.TotalMilliseconds, 2));
        w.WriteStartObject("checks");
        foreach (var (name, entry) in report.Entries)
        {
            w.WriteStartObject(name);
            w.WriteString("status", entry.Status.ToString());
            if (entry.Description is { } d) w.WriteString("description", d);
            w.WriteNumber("duration_ms", Math.Round(entry.Duration.TotalMilliseconds, 2));
            if (entry.Exception is { } e) w.WriteString("error", e.Message);
            if (entry.Data.Count > 0)
            {
                w.WriteStartObject("data");
                foreach (var (k, v) in entry.Data)
                {
                    switch (v)
                    {
                        case null: w.WriteNull(k); break;
                        case string s: w.WriteString(k, s); break;
                        case bool b: w.WriteBoolean(k, b); break;
                        case int i: w.WriteNumber(k, i); break;
                        case long l: w.WriteNumber(k, l); break;
                        case float f: w.WriteNumber(k, f); break;
                        case double x: w.WriteNumber(k, x); break;
                        case decimal m: w.WriteNumber(k, m); break;
                        default: w.WriteString(k, Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)); break;
                    }
                }
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        w.WriteEndObject();
        w.WriteEndObject();
        await w.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
    }
}
