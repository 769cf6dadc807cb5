using System.Globalization;
using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Attribution;
using Bursar.Core.Caching;
using Bursar.Core.Caching.Semantic;
using Bursar.Gateway.Admission;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Hosting;
using Bursar.Gateway.Metering;
using Bursar.Providers.Dialects;
using Bursar.Providers.Sse;
using Bursar.Providers.Translation;
using Bursar.Providers.Upstream;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Proxy;

/// <summary>
/// The request path: authenticate the virtual key, attribute, read and check the body, pick the deployment,
/// translate if the dialects differ, call upstream (with retries), stream or copy the answer back while metering it,
/// and leave exactly one ledger record, whatever happened.
/// </summary>
public sealed partial class ProxyPipeline(
    KeyAuthenticator auth,
    AdmissionControl admission,
    VolatilePrefixDetector volatility,
    IResponseCacheStore cache,
    SemanticResponseCache semantic,
    PromptCachePlacer placer,
    PromptCacheOptions promptCache,
    Bursar.Core.Pricing.PriceCatalog catalog,
    ResponseCacheOptions cacheOptions,
    CacheFillCoordinator fills,
    UpstreamRegistry registry,
    Bursar.Core.Routing.RouteTable routes,
    Bursar.Core.Routing.ComplexityRouter router,
    UpstreamClient upstream,
    PrefixFingerprint prefixes,
    Bursar.Gateway.Routing.DeploymentHealth health,
    Bursar.Core.Routing.OutputCapLearner caps,
    Bursar.Gateway.Routing.LlmClassifier llmClassifier,
    CallMeter meter,
    BursarOptions options,
    TimeProvider time,
    ILogger<ProxyPipeline> logger)
{
    /// <summary>OpenAI caches prompts of at least this many tokens.</summary>
    private const int PromptCacheModelMinimum = 1024;

    private static readonly string[] ForwardedResponseHeaders = ["request-id", "x-request-id", "retry-after", "retry-after-ms"];

    public async Task HandleAsync(HttpContext ctx, Dialect dialect)
    {
        var call = new CallContext
        {
            Id = Guid.CreateVersion7(time.GetUtcNow()).ToString("N"),
            Started = time.GetUtcNow(),
            StartTimestamp = time.GetTimestamp(),
            Dialect = dialect,
        };
        ctx.Response.Headers["x-bursar-request-id"] = call.Id;
        byte[]? rented = null;
        string? cacheKey = null;
        var cacheLeader = false;
        var cacheStored = false;
        string? semanticPartition = null;
        string? semanticQuestion = null;
        try
        {
            var (key, authError) = await auth.AuthenticateAsync(ctx.Request, ctx.RequestAborted).ConfigureAwait(false);
            if (authError is not null)
            {
                await RefuseAsync(ctx, call, authError).ConfigureAwait(false);
                return;
            }
            call.Attribution = AttributionResolver.Resolve(key!, name => ctx.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null, out var tagError);
            if (tagError is not null)
            {
                await RefuseAsync(ctx, call, tagError.Malformed ? ProviderError.BadRequest(tagError.Message, tagError.Header) : ProviderError.Forbidden(tagError.Message)).ConfigureAwait(false);
                return;
            }

            var (buffer, length, sizeError) = await ReadBodyAsync(ctx.Request, options.MaxRequestBodyBytes, ctx.RequestAborted).ConfigureAwait(false);
            rented = buffer;
            if (sizeError is not null)
            {
                await RefuseAsync(ctx, call, sizeError).ConfigureAwait(false);
                return;
            }
            var body = new ReadOnlyMemory<byte>(buffer, 0, length);
            // the caller's body as a DOM, parsed at most once: the caches read it, then the upstream builder may change it
            JsonObject? parsed = null;
            JsonObject Parsed() => parsed ??= CallerJson.Parse(body.Span);
            var scan = RequestScan.Run(body.Span, dialect);
            call.RequestedModel = scan.Model;
            call.Streamed = scan.Stream;
            call.EstimatedInputTokens = scan.EstimatedInputTokens;
            if (scan.Error is not null)
            {
                await RefuseAsync(ctx, call, scan.Error).ConfigureAwait(false);
                return;
            }
            // route policies: the first matching route may serve another model (any provider) and cap the output
            var routing = routes.Current; // one snapshot per request: the admin API may swap the table meanwhile
            var route = routing.Match(call.Attribution, scan.Model!, scan.EstimatedInputTokens);
            var target = route?.Model ?? (route?.Tier is { } tier ? Bursar.Core.Routing.TierLadders.Rung(scan.Model!, tier) : null) ?? scan.Model!;
            string? why = target == scan.Model || route is null ? null
                : route.Tier is not null ? $"policy: route '{route.Name}' serves the {route.Tier} tier {target} for {scan.Model}"
                : $"policy: route '{route.Name}' serves {target} for {scan.Model}";
            var ladder = route is { Ladder.Length: > 0 };
            if (route is not null) call.Route = route.Name;
            // a ladder route picks its model after the caches (a cache hit needs no decision, and the LLM classifier costs a call);
            // any other call must name a served model
            var deployment = ladder ? null : registry.Find(target);
            if (!ladder && deployment is null)
            {
                await RefuseAsync(ctx, call, ProviderError.ModelNotFound(scan.Model!,
                    $"The model '{scan.Model}' is not served by any configured deployment (configured: {string.Join(", ", registry.Deployments.Select(d => $"{d.Name} [{string.Join(' ', d.Options.Models)}]"))}). Add it to Bursar:Providers:Deployments:<name>:Models.")).ConfigureAwait(false);
                return;
            }

            // exact response cache: identical deterministic requests are answered without a call
            var cacheHeader = ctx.Request.Headers["x-bursar-cache"].ToString();
            var ttl = cacheOptions.TtlFor(call.Attribution.Feature);
            if (cacheOptions.Enabled && route?.ResponseCache != false && ttl > TimeSpan.Zero && cacheHeader != "off" && (scan.Deterministic || cacheHeader == "on"))
            {
                try
                {
                    var tenant = ResponseCacheKey.Tenant(key!, call.Attribution);
                    cacheKey = ResponseCacheKey.Compute(tenant, dialect.Name(), scan.Stream, Parsed());
                }
                catch (Exception e) when (IsBadJson(e))
                {
                    cacheKey = null;
                }
                if (cacheKey is not null)
                {
                    if (await cache.GetAsync(cacheKey, ctx.RequestAborted).ConfigureAwait(false) is { } hit)
                    {
                        await ServeHitAsync(ctx, call, hit).ConfigureAwait(false);
                        return;
                    }
                    if (fills.TryLead(cacheKey, out var wait))
                    {
                        cacheLeader = true;
                    }
                    else
                    {
                        // an identical call is already on its way upstream: wait for its answer instead of paying twice
                        var stored = await wait.WaitAsync(TimeSpan.FromMinutes(2), ctx.RequestAborted).ConfigureAwait(false);
                        if (stored && await cache.GetAsync(cacheKey, ctx.RequestAborted).ConfigureAwait(false) is { } filled)
                        {
                            await ServeHitAsync(ctx, call, filled).ConfigureAwait(false);
                            return;
                        }
                        cacheKey = null;
                    }
                }
            }
            // semantic response cache (opt-in per feature): a similar single-turn question of the same tenant, model and system prompt
            if ((route?.SemanticCache ?? semantic.Options.AppliesTo(call.Attribution.Feature)) && cacheHeader != "off")
            {
                try
                {
                    if (SemanticResponseCache.Question(Parsed(), semantic.Options.MaxUserTurns) is { } q)
                    {
                        var tenant = ResponseCacheKey.Tenant(key!, call.Attribution);
                        semanticPartition = SemanticResponseCache.Partition(tenant, scan.Model!, q.SystemHash, dialect.Name(), scan.Stream);
                        var (similar, score, _) = await semantic.LookupAsync(semanticPartition, q.Question, ctx.RequestAborted).ConfigureAwait(false);
                        if (similar is not null)
                        {
                            ctx.Response.Headers["x-bursar-cache-similarity"] = score.ToString("0.0000", System.Globalization.CultureInfo.InvariantCulture);
                            await ServeHitAsync(ctx, call, similar.Response, semanticHit: true).ConfigureAwait(false);
                            return;
                        }
                        semanticQuestion = q.Question;
                    }
                }
                catch (Exception e) when (IsBadJson(e) || e is HttpRequestException)
                {
                    // an unreadable body or an embeddings endpoint that is down: no semantic cache for this call
                    semanticPartition = null;
                    semanticQuestion = null;
                }
            }
            ctx.Response.Headers["x-bursar-cache"] = cacheKey is null ? (semanticQuestion is null ? "bypass" : "miss") : "miss";

            if (ladder && route is not null)
            {
                // the complexity router picks the ladder's rung: P(needs the strong model), calibrated to the route's strong share
                (string Text, int Turns) prompt;
                try { prompt = Bursar.Core.Routing.PromptText.LastUser(Parsed()); }
                catch (Exception e) when (IsBadJson(e)) { prompt = ("", 0); }
                if (route.Classifier == "llm")
                {
                    // the optional LLM classifier: a one-word difficulty from the cheapest tier; no usable answer means the top rung
                    var classifierModel = route.ClassifierModel ?? route.Ladder[0];
                    var (label, detail) = await llmClassifier.ClassifyAsync(classifierModel, prompt.Text, call.Attribution, route.Name, ctx.RequestAborted).ConfigureAwait(false);
                    target = route.Ladder[label is null ? route.Ladder.Length - 1 : Bursar.Core.Routing.DifficultyPrompt.Rung(label, route.Ladder.Length)];
                    why = $"llm classifier: route '{route.Name}' {detail} -> {target}{(label is null ? " (no usable answer: top rung)" : "")}";
                }
                else
                {
                    var score = router.Score(prompt.Text, call.Attribution.Task, Math.Max(1, prompt.Turns));
                    var quantile = router.QuantileOf(score);
                    var (rung, low) = route.Rung(quantile);
                    target = rung;
                    why = string.Create(CultureInfo.InvariantCulture, $"classifier: route '{route.Name}' score {score:F3} (quantile {quantile:F2}, strong share {route.StrongShare:F2}) -> {rung}{(low ? " (low confidence: one rung up)" : "")}");
                }
            }
            deployment ??= registry.Find(target)!; // ladder rungs are checked against the deployments when the route loads
            if (route is not null)
            {
                if (target != scan.Model)
                {
                    call.RoutedFrom = scan.Model;
                    call.RoutingReason = why;
                }
                else if (why is not null) call.RoutingReason = "kept: " + why; // the decision is on the ledger even when it keeps the model
            }
            if (scan.EstimatedInputTokens >= PromptCacheModelMinimum)
            {
                try { call.Prefix = prefixes.Of(target, PromptCachePlacer.SystemText(Parsed()), ctx.RequestAborted); }
                catch (Exception e) when (IsBadJson(e)) { /* the upstream builder names the fault */ }
            }
            var routeCap = route is null ? null : caps.CapFor(route); // fixed, or learned from the ledger
            var maxTokens = routeCap is { } cap && (scan.MaxTokens is null || scan.MaxTokens > cap) ? cap : scan.MaxTokens;

            // rate limits, run caps, budgets: before any money is spent
            var admitted = call.Admitted = admission.Admit(key!, call.Attribution, target, deployment, scan.EstimatedInputTokens, scan.InputTokenBound, maxTokens, scan.Choices, out var refusal);
            if (refusal is not null)
            {
                await RefuseAsync(ctx, call, refusal, "refused").ConfigureAwait(false);
                return;
            }
            deployment = admitted.Deployment!;
            var model = admitted.Model!;
            call.RoutingReason = admitted.RoutingReason ?? call.RoutingReason;
            call.Provider = deployment.ProviderName;
            if (admitted.RunId is not null && admission.Runs.Options.NeedsText) call.Summary.Text = new System.Text.StringBuilder();

            // the chain: the chosen model, then the route's fallbacks (deployments in cooldown last; models whose context window is too small skipped, and said so)
            var chain = Chain(route, deployment, model, scan.EstimatedInputTokens + (maxTokens ?? 0), out var skipped);
            var failures = new List<string>();
            var upstreamBody = body;
            var injectedUsage = false;
            UpstreamResponse response;
            var chosen = model;
            for (var attempt = 0; ; attempt++)
            {
                (deployment, model) = chain[attempt];
                call.Provider = deployment.ProviderName;
                if (attempt > 0) parsed = null; // the previous attempt may have changed the DOM: start again from the caller's bytes
                upstreamBody = body;
                injectedUsage = false;
                // what goes upstream: the caller's bytes unchanged unless a translation, a downgrade, metering or prompt caching needs a change
                try
                {
                    JsonObject? node = null;
                    JsonObject Node() => node ??= Parsed();
                    var modified = false;
                    if (deployment.Dialect != dialect)
                    {
                        node = RequestTranslator.Translate(dialect, deployment.Dialect, Node());
                        node["model"] = model;
                        modified = true;
                    }
                    else if (model != scan.Model)
                    {
                        Node()["model"] = model;
                        modified = true;
                    }
                    if (route is not null && (routeCap is not null || route.Stop.Length > 0))
                        modified |= Bursar.Core.Routing.OutputCaps.Apply(Node(), deployment.Dialect == Dialect.Anthropic, routeCap, route.Stop);
                    if (dialect == Dialect.OpenAI && deployment.Dialect == Dialect.OpenAI && scan.Stream && !scan.IncludeUsage)
                    {
                        // no streamed call goes unmetered: ask for usage, strip the extra chunk on the way back
                        var so = Node()["stream_options"] as JsonObject ?? new JsonObject();
                        so["include_usage"] = true;
                        Node()["stream_options"] = so;
                        injectedUsage = modified = true;
                    }
                    if ((route?.PromptCache ?? promptCache.AppliesTo(call.Attribution.Feature)) && scan.EstimatedInputTokens >= PromptCacheModelMinimum)
                    {
                        var price = catalog.Find(model).Price;
                        var minimum = price?.PromptCacheMinTokens ?? promptCache.DefaultMinimumTokens;
                        var cacheRoute = (call.Attribution.Feature ?? "-") + "|" + model;
                        if (promptCache.MovesVolatile(call.Attribution.Feature) && PromptCachePlacer.MoveVolatileToEnd(Node()))
                        {
                            // opted in: volatile values always travel after the stable prefix, so the prefix stays cacheable
                            modified = true;
                            call.VolatilePrefix = "moved: volatile system-prompt values (timestamps, ids) were moved into the newest user turn";
                        }
                        var systemText = PromptCachePlacer.SystemText(Node());
                        if (systemText.Length > 0 && volatility.Observe(cacheRoute, systemText, scan.EstimatedInputTokens) is { } vol)
                        {
                            var perCall = price is null ? (decimal?)null : vol.PrefixTokens * (price.Rates.Input - (price.Rates.CacheRead ?? price.Rates.Input)) / 1_000_000m;
                            call.VolatilePrefix = vol.Describe(perCall);
                            if (volatility.ShouldWarn(cacheRoute, time, TimeSpan.FromMinutes(10))) LogVolatile(logger, call.Attribution.Feature, call.VolatilePrefix);
                        }
                        if (deployment.Dialect == Dialect.Anthropic && promptCache.PlaceBreakpoints && scan.EstimatedInputTokens >= minimum)
                        {
                            var placed = placer.Place(Node(), model, (call.Attribution.Feature ?? "-") + "|" + model, minimum, ctx.RequestAborted);
                            if (placed.Placed > 0)
                            {
                                modified = true;
                                call.PromptCachePlaced = placed.CallerBreakpoints == 0;
                            }
                        }
                        else if (deployment.Dialect == Dialect.OpenAI && promptCache.SetOpenAIPromptCacheKey && scan.EstimatedInputTokens >= PromptCacheModelMinimum && Node()["prompt_cache_key"] is null)
                        {
                            Node()["prompt_cache_key"] = PromptCachePlacer.OpenAIPromptCacheKey(call.Attribution.Feature, call.Attribution.Team ?? call.Attribution.KeyId ?? "-");
                            modified = true;
                        }
                    }
                    if (modified) upstreamBody = CallerJson.Serialize(node!, body.Length);
                }
                catch (RequestTranslator.TranslationException e)
                {
                    await RefuseAsync(ctx, call, e.Error).ConfigureAwait(false);
                    return;
                }
                catch (Exception e) when (IsBadJson(e))
                {
                    await RefuseAsync(ctx, call, ProviderError.BadRequest($"The request body cannot be read for {deployment.Dialect.Name()}: {e.Message}")).ConfigureAwait(false);
                    return;
                }


                var path = deployment.Dialect == Dialect.Anthropic ? "v1/messages" : "chat/completions";
                var last = attempt + 1 >= chain.Count;
                try
                {
                    response = await upstream.SendAsync(deployment, path, upstreamBody, name => ctx.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null, ctx.RequestAborted).ConfigureAwait(false);
                }
                catch (Exception e) when (e is HttpRequestException or TimeoutException && !ctx.RequestAborted.IsCancellationRequested)
                {
                    health.Failed(deployment.Name, routing.Cooldown);
                    failures.Add($"{model}: {(e is TimeoutException ? "timed out" : "unreachable")}");
                    if (!last) continue;
                    var note = failures.Count > 1 ? $" (tried {string.Join("; ", failures)})" : "";
                    await RefuseAsync(ctx, call, e is TimeoutException
                        ? new ProviderError(504, $"Upstream deployment '{deployment.Name}' ({deployment.BaseUri}) did not answer within its timeout{note}.", ErrorSource.Upstream)
                        : new ProviderError(502, $"Upstream deployment '{deployment.Name}' ({deployment.BaseUri}) could not be reached: {e.Message}{note}", ErrorSource.Upstream), "upstream_error").ConfigureAwait(false);
                    return;
                }
                var status = (int)response.Message.StatusCode;
                if (!last && UpstreamClient.IsRetryable(status))
                {
                    // the chosen model is failing after the client's retries: cool its deployment down and try the next model in the chain
                    health.Failed(deployment.Name, routing.Cooldown);
                    failures.Add($"{model}: {status}");
                    response.Dispose();
                    continue;
                }
                break;
            }
            if (failures.Count > 0 || skipped.Count > 0 || model != chosen)
            {
                call.RoutedFrom ??= scan.Model;
                var parts = new List<string>();
                if (failures.Count == 0 && model != chosen) parts.Add($"fallback to {model}: {chosen}'s deployment is cooling down after recent failures");
                if (failures.Count > 0) parts.Add($"fallback to {model} after {string.Join("; ", failures)}");
                if (skipped.Count > 0) parts.Add($"skipped {string.Join("; ", skipped)}");
                call.RoutingReason = string.Join("; ", parts) + (call.RoutingReason is { } before ? $" (was: {before})" : "");
                LogFallback(logger, call.Attribution.Feature, call.RoutingReason);
            }
            using (response)
            {
                var capture = await RelayAsync(ctx, call, dialect, deployment, response.Message, injectedUsage, scan.IncludeUsage, cacheLeader || semanticQuestion is not null).ConfigureAwait(false);
                if (capture is not null && call.Outcome == "ok" && !ctx.RequestAborted.IsCancellationRequested)
                {
                    var stored = new CachedResponse(capture.Value.Body, capture.Value.ContentType, call.Summary.Model, meter.CostOf(call), call.Summary.Usage.TotalInputTokens, call.Summary.Usage.OutputTokens, time.GetUtcNow());
                    if (cacheKey is not null && cacheLeader)
                    {
                        await cache.SetAsync(cacheKey, stored, ttl, CancellationToken.None).ConfigureAwait(false);
                        cacheStored = true;
                    }
                    if (semanticQuestion is not null) await semantic.AddAsync(semanticPartition!, semanticQuestion, stored, CancellationToken.None).ConfigureAwait(false);
                }
            }
        }
        catch (CallerDisconnectedException)
        {
            // the caller dropped its stream: what passed through so far is metered and settled
            call.Outcome = "canceled";
            call.StatusCode = 499;
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            call.Outcome = "canceled";
            call.StatusCode = 499;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException && ctx.Response.HasStarted)
        {
            // the caller went away mid-stream, or the upstream connection broke
            call.Outcome = ctx.RequestAborted.IsCancellationRequested ? "canceled" : "upstream_error";
            call.ErrorMessage ??= e.Message;
        }
        catch (Exception e)
        {
            LogUnexpected(logger, call.Id, call.RequestedModel, e);
            call.Outcome = "gateway_error";
            call.ErrorMessage = e.Message;
            if (!ctx.Response.HasStarted)
            {
                call.StatusCode = 502;
                await WriteErrorAsync(ctx, call, new ProviderError(502, $"Bursar could not complete this call ({e.GetType().Name}); request id {call.Id}.", ErrorSource.Gateway)).ConfigureAwait(false);
            }
        }
        finally
        {
            if (cacheLeader) fills.Complete(cacheKey!, cacheStored);
            if (rented is not null) ReturnBody(rented);
            await SealAsync(call).ConfigureAwait(false); // a call that ended without its last byte (caller gone, upstream broke)
        }
    }

    /// <summary>
    /// Prices the call, settles its reservation, advances its run and appends its ledger record to the journal: called
    /// once, just before the call's last byte goes to the caller (or when the call ends without one), so an answer the
    /// caller received always has its record on disk.
    /// </summary>
    private async ValueTask SealAsync(CallContext call)
    {
        if (call.Sealed) return;
        call.Sealed = true;
        if (call.Summary.ErrorType is not null && call.Outcome == "ok")
        {
            // the provider's stream carried an error event: the caller got it, and so does the ledger
            call.Outcome = "upstream_error";
            call.ErrorType ??= call.Summary.ErrorType;
        }
        var a = call.Admitted;
        await meter.FinishAsync(call, record =>
        {
            var runEnd = admission.Complete(a, record, call.Summary.ToolCalls, call.Summary.Text?.ToString());
            return runEnd is null ? record : record with { RunEndReason = runEnd };
        }).ConfigureAwait(false);
    }

    /// <summary>Sends the upstream answer to the caller; returns a copy of what the caller got when <paramref name="capture"/> is set and the call succeeded.</summary>
    private async Task<(byte[] Body, string ContentType)?> RelayAsync(HttpContext ctx, CallContext call, Dialect dialect, UpstreamDeployment deployment, HttpResponseMessage response, bool injectedUsage, bool callerWantsUsage, bool capture)
    {
        var status = (int)response.StatusCode;
        call.StatusCode = status;
        foreach (var name in ForwardedResponseHeaders)
        {
            if (response.Headers.TryGetValues(name, out var values)) ctx.Response.Headers[name] = values.ToArray();
        }
        call.UpstreamRequestId = response.Headers.TryGetValues(deployment.Dialect == Dialect.Anthropic ? "request-id" : "x-request-id", out var rid) ? rid.FirstOrDefault() : null;
        var isSse = response.Content.Headers.ContentType?.MediaType == "text/event-stream";
        if (status != 200 || !isSse)
        {
            var bytes = await response.Content.ReadAsByteArrayAsync(ctx.RequestAborted).ConfigureAwait(false);
            if (bytes.Length > MaxPooledBodyBytes) LargeBodyMemoryTrim.LargeBodySeen(); // a large answer leaves pooled buffers behind too
            if (status != 200)
            {
                var err = ProviderError.TryParse(status, bytes);
                call.Outcome = "upstream_error";
                call.ErrorType = err?.TypeOverride ?? "http_" + status;
                call.ErrorMessage = err?.Message;
                if (deployment.Dialect != dialect || err is null)
                {
                    // the caller's dialect, the caller's vocabulary: an Anthropic overloaded_error reaches an OpenAI caller as a 503 server_error
                    var shown = (err ?? new ProviderError(status, $"Upstream '{deployment.Name}' answered HTTP {status}.", ErrorSource.Upstream)).ForDialect(dialect);
                    status = shown.Status;
                    call.StatusCode = status;
                    bytes = shown.ToJson(dialect);
                }
                await WriteJsonAsync(ctx, call, status, bytes).ConfigureAwait(false);
                return null;
            }
            call.Summary.Answered = true;
            if (!UsageReader.TryReadResponse(deployment.Dialect, bytes, call.Summary))
            {
                call.Outcome = "upstream_error";
                call.ErrorType = "usage_unreadable";
                call.ErrorMessage = $"Upstream '{deployment.Name}' ({deployment.BaseUri}) answered 200 with a body that is not a {deployment.Dialect.Name()} response; check its Dialect and BaseUrl.";
                call.StatusCode = 502;
                await WriteErrorAsync(ctx, call, new ProviderError(502, call.ErrorMessage, ErrorSource.Upstream)).ConfigureAwait(false);
                return null;
            }
            if (deployment.Dialect != dialect)
                bytes = ResponseTranslator.Translate(deployment.Dialect, dialect, bytes, time.GetUtcNow().ToUnixTimeSeconds());
            await WriteJsonAsync(ctx, call, 200, bytes).ConfigureAwait(false);
            return capture ? (bytes, "application/json") : null;
        }

        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        call.Summary.Answered = true;
        SseStreamHandler handler = (deployment.Dialect, dialect) switch
        {
            (Dialect.Anthropic, Dialect.Anthropic) => new AnthropicMeteringHandler(call.Summary, time),
            (Dialect.OpenAI, Dialect.OpenAI) => new OpenAIMeteringHandler(call.Summary, time, injectedUsage),
            (Dialect.Anthropic, Dialect.OpenAI) => new AnthropicToOpenAIStream(call.Summary, time, includeUsage: callerWantsUsage, time.GetUtcNow().ToUnixTimeSeconds()),
            _ => new OpenAIToAnthropicStream(call.Summary, time, call.EstimatedInputTokens),
        };
        await using var upstreamStream = await response.Content.ReadAsStreamAsync(ctx.RequestAborted).ConfigureAwait(false);
        var copy = capture ? new ArrayBufferWriter<byte>(4096) : null;
        await SsePump.PumpAsync(upstreamStream, ctx.Response.BodyWriter, handler, ctx.RequestAborted, copy, () => SealAsync(call)).ConfigureAwait(false);
        if (call.Summary.ErrorType is not null)
        {
            call.Outcome = "upstream_error";
            call.ErrorType = call.Summary.ErrorType;
            return null;
        }
        return copy is not null && call.Summary.FinishReason is not null ? (copy.WrittenSpan.ToArray(), "text/event-stream") : null;
    }

    private async Task ServeHitAsync(HttpContext ctx, CallContext call, CachedResponse hit, bool semanticHit = false)
    {
        call.CacheHit = hit;
        call.Provider = semanticHit ? "bursar-semantic-cache" : "bursar-cache";
        call.Summary.Model = hit.Model;
        call.StatusCode = 200;
        ctx.Response.Headers["x-bursar-cache"] = semanticHit ? "semantic-hit" : "hit";
        ctx.Response.Headers["x-bursar-cache-age"] = ((long)(time.GetUtcNow() - hit.StoredAt).TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = hit.ContentType;
        if (hit.ContentType == "text/event-stream") ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.ContentLength = hit.Body.Length;
        await SealAsync(call).ConfigureAwait(false);
        await ctx.Response.Body.WriteAsync(hit.Body, ctx.RequestAborted).ConfigureAwait(false);
        await ctx.Response.CompleteAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// The pool request bodies are read into. Not <see cref="ArrayPool{T}.Shared"/>: that pool keeps arrays of any size
    /// per core for good, so a burst of multi-megabyte bodies stays resident (RSS went from 84 MB to 2.18 GB under a
    /// fuzz run). Here only buffers up to <see cref="MaxPooledBodyBytes"/> are pooled; a larger body gets a plain array
    /// the GC takes back once the call ends.
    /// </summary>
    private static readonly ArrayPool<byte> BodyPool = ArrayPool<byte>.Create(MaxPooledBodyBytes, 32);

    /// <summary>The largest body buffer kept for reuse (1 MiB).</summary>
    internal const int MaxPooledBodyBytes = 1024 * 1024;

    internal static byte[] RentBody(int size)
    {
        if (size <= MaxPooledBodyBytes) return BodyPool.Rent(size);
        LargeBodyMemoryTrim.LargeBodySeen(); // the copies a large body makes are given back to the OS once such bodies stop
        return GC.AllocateUninitializedArray<byte>(size);
    }

    private static void ReturnBody(byte[] buffer)
    {
        if (buffer.Length <= MaxPooledBodyBytes && buffer.Length > 0) BodyPool.Return(buffer);
    }

    /// <summary>The caller's body could not be read as HTTP (bad chunked framing, fewer bytes than its Content-Length): a 400 that says so.</summary>
    internal static ProviderError UnreadableBody(Exception e) => e is BadHttpRequestException { StatusCode: 413 }
        ? ProviderError.TooLarge($"The request body is too large: {e.Message}")
        : ProviderError.BadRequest($"The request body could not be read: {e.Message} Check the Content-Length or Transfer-Encoding: chunked framing.");

    private async Task<(byte[] Buffer, int Length, ProviderError? Error)> ReadBodyAsync(HttpRequest request, long max, CancellationToken ct)
    {
        if (request.ContentLength > max)
            return ([], 0, ProviderError.TooLarge($"The request body is {request.ContentLength} bytes; the limit is {max} bytes (Bursar:MaxRequestBodyBytes)."));
        // a declared length is trusted only up to the pooled size: a caller that announces 30 MB and sends 10 bytes gets a small buffer
        var size = request.ContentLength is { } cl and > 0 ? (int)Math.Min(cl, MaxPooledBodyBytes) : 16 * 1024;
        var buffer = RentBody(size);
        var length = 0;
        try
        {
            while (true)
            {
                if (length == buffer.Length)
                {
                    if (buffer.Length >= max)
                    {
                        ReturnBody(buffer);
                        return ([], 0, ProviderError.TooLarge($"The request body exceeds the limit of {max} bytes (Bursar:MaxRequestBodyBytes)."));
                    }
                    var bigger = RentBody((int)Math.Min(Math.Max((long)buffer.Length * 2, request.ContentLength ?? 0), max + 1));
                    buffer.AsSpan(0, length).CopyTo(bigger);
                    ReturnBody(buffer);
                    buffer = bigger;
                }
                var n = await request.Body.ReadAsync(buffer.AsMemory(length), ct).ConfigureAwait(false);
                if (n == 0) break;
                length += n;
                if (length > max)
                {
                    ReturnBody(buffer);
                    return ([], 0, ProviderError.TooLarge($"The request body exceeds the limit of {max} bytes (Bursar:MaxRequestBodyBytes)."));
                }
            }
        }
        catch (Exception e) when (e is BadHttpRequestException || (e is IOException && !ct.IsCancellationRequested))
        {
            // Kestrel's framing errors ("Transfer-Encoding: chunked" then "ZZZ"; an IOException for a chunk size that overflows): the caller's fault, one line in the log
            ReturnBody(buffer);
            LogUnreadableBody(logger, e.Message);
            return ([], 0, UnreadableBody(e));
        }
        catch
        {
            ReturnBody(buffer);
            throw;
        }
        return (buffer, length, null);
    }

    /// <summary>What reading a caller's JSON into a DOM can throw: duplicate keys, text that is not valid UTF-16, wrong node kinds.</summary>
    private static bool IsBadJson(Exception e) => e is JsonException or InvalidOperationException or ArgumentException or FormatException or InvalidCastException;

    private async Task RefuseAsync(HttpContext ctx, CallContext call, ProviderError error, string? outcome = null)
    {
        call.Outcome = outcome ?? (error.Source switch { ErrorSource.Upstream => "upstream_error", ErrorSource.Policy => "refused", _ => "client_error" });
        call.StatusCode = error.Status;
        call.ErrorType = call.Dialect == Dialect.Anthropic ? error.AnthropicType : error.Code ?? error.OpenAIType;
        call.ErrorMessage = error.Message;
        await WriteErrorAsync(ctx, call, error).ConfigureAwait(false);
    }

    private Task WriteErrorAsync(HttpContext ctx, CallContext call, ProviderError error)
    {
        if (error.RetryAfterSeconds is { } ra) ctx.Response.Headers.RetryAfter = ra.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return WriteJsonAsync(ctx, call, error.Status, error.ToJson(call.Dialect));
    }

    /// <summary>Writes an error outside a metered call (no ledger record): count_tokens, unknown endpoints.</summary>
    internal static Task WriteErrorAsync(HttpContext ctx, Dialect dialect, ProviderError error)
    {
        if (error.RetryAfterSeconds is { } ra) ctx.Response.Headers.RetryAfter = ra.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return WriteBodyAsync(ctx, error.Status, error.ToJson(dialect));
    }

    /// <summary>The call's answer in one piece: its ledger record is journaled first, then the caller gets every byte.</summary>
    private async Task WriteJsonAsync(HttpContext ctx, CallContext call, int status, byte[] bytes)
    {
        await SealAsync(call).ConfigureAwait(false);
        await WriteBodyAsync(ctx, status, bytes).ConfigureAwait(false);
    }

    private static async Task WriteBodyAsync(HttpContext ctx, int status, byte[] bytes)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = bytes.Length;
        await ctx.Response.Body.WriteAsync(bytes, ctx.RequestAborted).ConfigureAwait(false);
        await ctx.Response.CompleteAsync().ConfigureAwait(false);
    }

    /// <summary>The models to try in order: the chosen one, then the route's fallbacks; deployments cooling down go last, models too small for the request are left out (and named).</summary>
    private List<(UpstreamDeployment Deployment, string Model)> Chain(Bursar.Core.Routing.RoutePolicy? route, UpstreamDeployment deployment, string model, long neededTokens, out List<string> skipped)
    {
        skipped = [];
        var chain = new List<(UpstreamDeployment, string)> { (deployment, model) };
        if (route is null || route.Fallbacks.Length == 0) return chain;
        foreach (var fb in route.Fallbacks)
        {
            if (fb == model || registry.Find(fb) is not { } d) continue;
            if (catalog.Find(fb).Price?.ContextWindow is { } window && neededTokens > window)
            {
                skipped.Add($"{fb} (context window {window:N0} tokens < {neededTokens:N0} needed)");
                continue;
            }
            chain.Add((d, fb));
        }
        // a deployment in cooldown is tried only after every healthy one
        return chain.OrderBy(c => health.IsCooling(c.Item1.Name) ? 1 : 0).ToList();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Routing fallback on feature {Feature}: {Detail}")]
    private static partial void LogFallback(ILogger logger, string? feature, string detail);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Prompt caching is defeated on feature {Feature}: {Detail}")]
    private static partial void LogVolatile(ILogger logger, string? feature, string detail);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refused a request body that could not be read: {Reason}")]
    private static partial void LogUnreadableBody(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Call {CallId} for model {Model} failed inside the gateway")]
    private static partial void LogUnexpected(ILogger logger, string callId, string? model, Exception exception);
}
