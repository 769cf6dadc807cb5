using Bursar.Core.Pipeline;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Gateway.Endpoints;

/// <summary>
/// OpenAI's Responses API: <c>POST /v1/responses</c> through the lever pipeline like chat; <c>GET</c> and <c>DELETE
/// /v1/responses/{id}</c> and <c>GET /v1/responses/{id}/input_items</c> forwarded (unmetered: they bill nothing) to the
/// deployment that holds the response.
/// </summary>
public static class ResponsesApi
{
    public static IEndpointRouteBuilder MapResponsesApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/responses", (HttpContext ctx, ProxyPipeline pipeline) => pipeline.HandleAsync(ctx, Dialect.OpenAI, WireApi.Responses));
        app.MapGet("/v1/responses/{id}", (HttpContext ctx, string id, StoredResponses stored) => stored.ForwardAsync(ctx, HttpMethod.Get, id, ""));
        app.MapDelete("/v1/responses/{id}", (HttpContext ctx, string id, StoredResponses stored) => stored.ForwardAsync(ctx, HttpMethod.Delete, id, ""));
        app.MapGet("/v1/responses/{id}/input_items", (HttpContext ctx, string id, StoredResponses stored) => stored.ForwardAsync(ctx, HttpMethod.Get, id, "/input_items"));
        return app;
    }
}

/// <summary><c>POST /v1/embeddings</c>: metered at the embedding model's input rate, attributed, budgeted, cached exactly when identical.</summary>
public static class EmbeddingsApi
{
    public static IEndpointRouteBuilder MapEmbeddingsApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/embeddings", (HttpContext ctx, ProxyPipeline pipeline) => pipeline.HandleAsync(ctx, Dialect.OpenAI, WireApi.Embeddings));
        return app;
    }
}

/// <summary>Reads and deletes stored responses where they live: the deployment that served them, else each OpenAI deployment in turn.</summary>
public sealed class StoredResponses(KeyAuthenticator auth, ResponseChains chains, UpstreamRegistry registry, UpstreamClient upstream)
{
    public async Task ForwardAsync(HttpContext ctx, HttpMethod method, string id, string sub)
    {
        var (key, error) = await auth.AuthenticateAsync(ctx.Request, ctx.RequestAborted).ConfigureAwait(false);
        if (error is not null)
        {
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.OpenAI, error).ConfigureAwait(false);
            return;
        }
        var notFound = new ProviderError(404, $"Response with id '{RequestScan.Shown(id)}' not found.") { Param = "response_id" };
        if (id.Length is 0 or > 256)
        {
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.OpenAI, notFound).ConfigureAwait(false);
            return;
        }
        var entry = chains.Find(id);
        if (entry is not null && entry.Scope != ResponseChains.ScopeOf(key!))
        {
            // another tenant's response: it does not exist for this caller
            await CallerAnswer.WriteErrorAsync(ctx, Dialect.OpenAI, notFound).ConfigureAwait(false);
            return;
        }
        if (entry?.Conversation is not null)
        {
            await BursarHeldAsync(ctx, method, entry, sub).ConfigureAwait(false);
            return;
        }
        var candidates = registry.Deployments.Where(d => d.Dialect == Dialect.OpenAI && (entry is null || d.Name == entry.Deployment)).ToList();
        var path = "responses/" + Uri.EscapeDataString(id) + sub + ctx.Request.QueryString.Value;
        for (var i = 0; i < candidates.Count; i++)
        {
            UpstreamResponse response;
            try
            {
                response = await upstream.SendAsync(candidates[i], method, path, default, name => ctx.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null, ctx.RequestAborted).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TimeoutException && !ctx.RequestAborted.IsCancellationRequested)
            {
                if (i + 1 < candidates.Count) continue;
                await CallerAnswer.WriteErrorAsync(ctx, Dialect.OpenAI, new ProviderError(502, $"Upstream deployment '{candidates[i].Name}' could not be reached: {e.Message}", ErrorSource.Upstream)).ConfigureAwait(false);
                return;
            }
            using (response)
            {
                var status = (int)response.Message.StatusCode;
                if (status == 404 && entry is null && i + 1 < candidates.Count) continue; // not this deployment's: ask the next
                if (method == HttpMethod.Delete && status == 200) chains.Remove(id);
                ctx.Response.StatusCode = status;
                ctx.Response.ContentType = response.Message.Content.Headers.ContentType?.ToString() ?? "application/json";
                if (response.Message.Headers.TryGetValues("x-request-id", out var rid)) ctx.Response.Headers["x-request-id"] = rid.ToArray();
                ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering(); // GET ?stream=true replays the stream
                await using var body = await response.Message.Content.ReadAsStreamAsync(ctx.RequestAborted).ConfigureAwait(false);
                await body.CopyToAsync(ctx.Response.Body, ctx.RequestAborted).ConfigureAwait(false);
                return;
            }
        }
        await CallerAnswer.WriteErrorAsync(ctx, Dialect.OpenAI, notFound).ConfigureAwait(false);
    }

    /// <summary>A response a Claude model gave: Bursar holds it, so Bursar answers (as OpenAI would).</summary>
    private async Task BursarHeldAsync(HttpContext ctx, HttpMethod method, ResponseChains.Entry entry, string sub)
    {
        byte[] body;
        if (method == HttpMethod.Delete)
        {
            chains.Remove(entry.Id);
            body = System.Text.Encoding.UTF8.GetBytes(new System.Text.Json.Nodes.JsonObject { ["id"] = entry.Id, ["object"] = "response.deleted", ["deleted"] = true }.ToJsonString());
        }
        else if (sub.Length == 0) body = entry.Stored!;
        else
        {
            var items = (entry.InputItems ?? []).Select(i => i!.DeepClone()).ToList();
            if (ctx.Request.Query["order"] != "asc") items.Reverse();
            var list = new System.Text.Json.Nodes.JsonObject
            {
                ["object"] = "list", ["data"] = new System.Text.Json.Nodes.JsonArray([.. items]),
                ["first_id"] = items.Count > 0 ? items[0]!["id"]?.DeepClone() : null, ["last_id"] = items.Count > 0 ? items[^1]!["id"]?.DeepClone() : null, ["has_more"] = false,
            };
            body = System.Text.Encoding.UTF8.GetBytes(list.ToJsonString());
        }
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.Body.WriteAsync(body, ctx.RequestAborted).ConfigureAwait(false);
    }
}
