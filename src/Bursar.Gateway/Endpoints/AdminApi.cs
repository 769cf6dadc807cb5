using System.Text.Json.Serialization;
using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Limits;
using Bursar.Core.Attribution;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Gateway.Endpoints;

/// <summary>
/// <c>/admin/...</c>: budgets, rate limits and keys, with live spend. Requires <c>Bursar:AdminKey</c>
/// (sent as <c>Authorization: Bearer</c> or <c>x-admin-key</c>); errors are RFC 9457 problem details.
/// </summary>
public static class AdminApi
{
    public sealed record BudgetRequest(
        [property: JsonPropertyName("scope")] BudgetScope Scope,
        [property: JsonPropertyName("value")] string? Value,
        [property: JsonPropertyName("period")] BudgetPeriod Period,
        [property: JsonPropertyName("limit_usd")] decimal LimitUsd,
        [property: JsonPropertyName("soft_limit_fraction")] decimal? SoftLimitFraction,
        [property: JsonPropertyName("time_zone")] string? TimeZone);

    public sealed record BudgetView(string Id, string Scope, string? Value, string Period, decimal LimitUsd, decimal SoftLimitUsd, string TimeZone,
        decimal SpentUsd, decimal ReservedUsd, decimal RemainingUsd, DateTimeOffset WindowStart, DateTimeOffset ResetsAt, bool SoftLimitReached)
    {
        public static BudgetView From(BudgetStatus s) => new(s.Budget.Id, s.Budget.Scope.ToString().ToLowerInvariant(), s.Budget.Value, s.Budget.Period.ToString().ToLowerInvariant(),
            s.Budget.LimitUsd, s.Budget.SoftLimitUsd, s.Budget.TimeZone, s.SpentUsd, s.ReservedUsd, s.RemainingUsd, s.WindowStart, s.ResetsAt, s.SoftLimitReached);
    }

    public sealed record RateLimitRequest(
        [property: JsonPropertyName("requests_per_minute")] int? RequestsPerMinute,
        [property: JsonPropertyName("tokens_per_minute")] long? TokensPerMinute);

    public sealed record KeyRequest(
        [property: JsonPropertyName("name")] string? Name,
        [property: JsonPropertyName("team")] string? Team,
        [property: JsonPropertyName("customer")] string? Customer,
        [property: JsonPropertyName("feature")] string? Feature,
        [property: JsonPropertyName("allowed_tags")] string[]? AllowedTags,
        [property: JsonPropertyName("allowed_customers")] string[]? AllowedCustomers,
        [property: JsonPropertyName("downgrade_model")] string? DowngradeModel,
        [property: JsonPropertyName("unpriced_policy")] string? UnpricedPolicy,
        [property: JsonPropertyName("requests_per_minute")] int? RequestsPerMinute,
        [property: JsonPropertyName("tokens_per_minute")] long? TokensPerMinute);

    public sealed record KeyView(string Id, string Prefix, string? Name, string? Team, string? Customer, string? Feature,
        [property: JsonPropertyName("allowed_customers")] IReadOnlyList<string>? AllowedCustomers, string? DowngradeModel, string UnpricedPolicy, DateTimeOffset CreatedAt, DateTimeOffset? RevokedAt)
    {
        public static KeyView From(VirtualKey k) => new(k.Id, k.Prefix, k.Name, k.Team, k.Customer, k.Feature, k.AllowedCustomers, k.DowngradeModel, k.UnpricedPolicy, k.CreatedAt, k.RevokedAt);
    }

    public sealed record CreatedKey(string Id, string Secret, KeyView Key);

    public static IEndpointRouteBuilder MapAdminApi(this IEndpointRouteBuilder app)
    {
        var admin = app.MapGroup("/admin").AddEndpointFilter(RequireAdminKey).ProducesAdminProblems();

        admin.MapGet("/budgets", async (BudgetManager budgets) => TypedResults.Ok((await budgets.SnapshotAsync()).Select(BudgetView.From).ToArray()))
            .WithTags("budgets").WithSummary("Budgets with the spend, reservations and reset time of their current period");
        admin.MapPut("/budgets/{id}", PutBudgetAsync)
            .WithTags("budgets").WithSummary("Create or change a budget").ProducesProblem(StatusCodes.Status400BadRequest);
        admin.MapDelete("/budgets/{id}", async Task<Results<NoContent, ProblemHttpResult>> (string id, IBudgetStore store, BudgetManager budgets, CancellationToken ct) =>
        {
            if (!await store.DeleteBudgetAsync(id, ct)) return NotFound($"No budget '{id}'.");
            await budgets.ReloadAsync(ct);
            return TypedResults.NoContent();
        }).WithTags("budgets").WithSummary("Delete a budget");
        admin.MapPost("/budgets/{id}/reset", async Task<Results<Ok<BudgetView>, ProblemHttpResult>> (string id, IBudgetStore store, BudgetManager budgets, TimeProvider time, CancellationToken ct) =>
        {
            if (!await store.ResetBudgetAsync(id, time.GetUtcNow(), ct)) return NotFound($"No budget '{id}'.");
            await budgets.ReloadAsync(ct);
            return TypedResults.Ok(BudgetView.From((await budgets.SnapshotAsync()).Single(s => s.Budget.Id == id)));
        }).WithTags("budgets").WithSummary("Start a budget's current period again from zero");
        admin.MapGet("/batches/pending", async (Bursar.Core.Batch.IJobStore jobs, Bursar.Core.Batch.IBatchStore batches, CancellationToken ct) =>
                TypedResults.Ok(await Bursar.Gateway.Batch.PendingWork.ReadAsync(jobs, batches, ct)))
            .WithTags("batches").WithSummary("The batch lever's work in flight: deferred jobs queued per deployment and model, jobs in a batch, and provider batches not yet collected");
        admin.MapGet("/alerts", (WebhookAlertSink alerts) => TypedResults.Ok(alerts.Raised.Select(BudgetView.From).ToArray()))
            .WithTags("budgets").WithSummary("Budgets whose soft limit raised an alert");

        admin.MapGet("/rate-limits", (RateLimiter limiter) => TypedResults.Ok(limiter.Limits))
            .WithTags("rate limits").WithSummary("Requests and tokens per minute per key, team or customer");
        admin.MapPut("/rate-limits/{scope}/{value}", PutRateLimitAsync)
            .WithTags("rate limits").WithSummary("Create or change a rate limit (scope: key, team or customer)").ProducesProblem(StatusCodes.Status400BadRequest);
        admin.MapDelete("/rate-limits/{scope}/{value}", async Task<Results<NoContent, ProblemHttpResult>> (string scope, string value, IRateLimitStore store, RateLimiter limiter, CancellationToken ct) =>
        {
            if (!Enum.TryParse<RateLimitScope>(scope, true, out var sc)) return Invalid("scope", $"Unknown scope '{scope}'; use key, team or customer.");
            if (!await store.DeleteRateLimitAsync(sc, value, ct)) return NotFound($"No rate limit for {scope} '{value}'.");
            limiter.Load(await store.ListRateLimitsAsync(ct));
            return TypedResults.NoContent();
        }).WithTags("rate limits").WithSummary("Delete a rate limit").ProducesProblem(StatusCodes.Status400BadRequest);

        admin.MapGet("/keys", async (IKeyStore keys, CancellationToken ct) => TypedResults.Ok((await keys.ListAsync(ct)).Select(KeyView.From).ToArray()))
            .WithTags("keys").WithSummary("Virtual keys (their secrets are never shown)");
        admin.MapPost("/keys", CreateKeyAsync)
            .WithTags("keys").WithSummary("Create a virtual key; the answer holds its secret, shown only this once").ProducesProblem(StatusCodes.Status400BadRequest);
        admin.MapPost("/keys/{id}/revoke", async Task<Results<Ok, ProblemHttpResult>> (string id, IKeyStore keys, KeyAuthenticator authenticator, TimeProvider time, CancellationToken ct) =>
        {
            if (!await keys.RevokeAsync(id, time.GetUtcNow(), ct)) return NotFound($"No active key '{id}'.");
            authenticator.Evict(id); // immediate on this instance; other instances re-read it within Bursar:KeyCacheDuration
            return TypedResults.Ok();
        }).WithTags("keys").WithSummary("Revoke a key: refused at once by this instance");
        return app;
    }

    /// <summary>
    /// The endpoint filter every admin route (and the dashboard's data) shares: 404 when no admin key is set, 401 without it,
    /// 429 (with retry-after) for a client IP that sent too many wrong admin keys within a minute.
    /// </summary>
    internal static async ValueTask<object?> RequireAdminKey(EndpointFilterInvocationContext ctx, EndpointFilterDelegate next)
    {
        var auth = (AdminAuth)ctx.HttpContext.RequestServices.GetService(typeof(AdminAuth))!;
        if (!auth.Enabled)
            return TypedResults.Problem(statusCode: 404, title: "Admin API disabled", detail: "Set Bursar:AdminKey to enable the admin API.");
        switch (auth.Check(ctx.HttpContext, out var retryAfter))
        {
            case AdminCheck.Ok:
                return await next(ctx);
            case AdminCheck.Throttled:
                return Throttled(ctx.HttpContext, retryAfter);
            case AdminCheck.Wrong:
                return TypedResults.Problem(statusCode: 401, title: "Wrong admin key",
                    detail: "The admin key sent (x-admin-key or Authorization: Bearer) is not Bursar:AdminKey. Repeated wrong keys from one address are refused with 429 for a minute.");
            default:
                return TypedResults.Problem(statusCode: 401, title: "Admin key required", detail: "Send the admin key (Bursar:AdminKey) as 'Authorization: Bearer <key>' or 'x-admin-key', or sign in at /dashboard.");
        }
    }

    /// <summary>429 for a client that sent too many wrong admin keys: problem details plus <c>retry-after</c>.</summary>
    internal static ProblemHttpResult Throttled(HttpContext ctx, TimeSpan retryAfter)
    {
        var secs = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds));
        ctx.Response.Headers.RetryAfter = secs.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return TypedResults.Problem(statusCode: 429, title: "Too many wrong admin keys",
            detail: $"Too many wrong admin keys from {AdminAuth.ClientOf(ctx)} within a minute (Bursar:AdminMaxFailuresPerMinute); retry in {secs} s with the right key (Bursar:AdminKey).",
            extensions: new Dictionary<string, object?> { ["retry_after_seconds"] = secs });
    }

    /// <summary>The name of the HttpOnly cookie the dashboard's sign-in sets (a session token, never the admin key).</summary>
    public const string AdminCookie = AdminAuth.SessionCookie;

    private static async Task<Results<Ok<BudgetView>, ProblemHttpResult>> PutBudgetAsync(string id, BudgetRequest body, IBudgetStore store, BudgetManager budgets, CancellationToken ct)
    {
        var def = new BudgetDefinition
        {
            Id = id, Scope = body.Scope, Value = body.Scope == BudgetScope.Global ? null : body.Value, Period = body.Period, LimitUsd = body.LimitUsd,
            SoftLimitFraction = body.SoftLimitFraction ?? 0.8m, TimeZone = body.TimeZone ?? "UTC",
        };
        try
        {
            def.Validate();
        }
        catch (ArgumentException e)
        {
            return Invalid("budget", e.Message);
        }
        await store.UpsertBudgetAsync(def, ct);
        await budgets.ReloadAsync(ct);
        return TypedResults.Ok(BudgetView.From((await budgets.SnapshotAsync()).Single(s => s.Budget.Id == id)));
    }

    private static async Task<Results<Ok<RateLimitDefinition>, ProblemHttpResult>> PutRateLimitAsync(string scope, string value, RateLimitRequest body, IRateLimitStore store, RateLimiter limiter, CancellationToken ct)
    {
        if (!Enum.TryParse<RateLimitScope>(scope, true, out var sc)) return Invalid("scope", $"Unknown scope '{scope}'; use key, team or customer.");
        var def = new RateLimitDefinition(sc, value, body.RequestsPerMinute, body.TokensPerMinute);
        try
        {
            def.Validate();
        }
        catch (ArgumentException e)
        {
            return Invalid("rate_limit", e.Message);
        }
        await store.UpsertRateLimitAsync(def, ct);
        limiter.Load(await store.ListRateLimitsAsync(ct));
        return TypedResults.Ok(def);
    }

    private static async Task<Results<Created<CreatedKey>, ProblemHttpResult>> CreateKeyAsync(KeyRequest body, IKeyStore keys, IRateLimitStore limits, RateLimiter limiter, TimeProvider time, CancellationToken ct)
    {
        if (body.UnpricedPolicy is not (null or "allow" or "refuse")) return Invalid("unpriced_policy", "unpriced_policy must be 'allow' or 'refuse'.");
        if (body.AllowedTags?.FirstOrDefault(t => !AttributionResolver.AllTags.Contains(t)) is { } bad)
            return Invalid("allowed_tags", $"Unknown tag '{bad}'; choose from {string.Join(", ", AttributionResolver.AllTags)}.");
        if (KeyFactory.CheckAllowedCustomers(body.AllowedCustomers, body.Customer, "allowed_customers") is { } customersProblem) return Invalid("allowed_customers", customersProblem);
        var (key, secret) = KeyFactory.Create(time, body.Name, body.Team, body.Customer, body.Feature, body.AllowedTags, body.DowngradeModel, body.UnpricedPolicy, body.AllowedCustomers);
        if (body.RequestsPerMinute is not null || body.TokensPerMinute is not null)
        {
            var limit = new RateLimitDefinition(RateLimitScope.Key, key.Id, body.RequestsPerMinute, body.TokensPerMinute);
            try { limit.Validate(); }
            catch (ArgumentException e) { return Invalid("rate_limit", e.Message); }
            await keys.AddAsync(key, ct);
            await limits.UpsertRateLimitAsync(limit, ct);
            limiter.Load(await limits.ListRateLimitsAsync(ct));
        }
        else
        {
            await keys.AddAsync(key, ct);
        }
        return TypedResults.Created($"/admin/keys/{key.Id}", new CreatedKey(key.Id, secret, KeyView.From(key)));
    }

    private static ProblemHttpResult Invalid(string field, string detail) =>
        TypedResults.Problem(statusCode: 400, title: $"Invalid {field}", detail: detail, extensions: new Dictionary<string, object?> { ["field"] = field });

    private static ProblemHttpResult NotFound(string detail) => TypedResults.Problem(statusCode: 404, title: "Not found", detail: detail);
}
