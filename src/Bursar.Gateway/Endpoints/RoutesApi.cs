using Bursar.Hosting;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Routing;
using Bursar.Gateway.Routing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Gateway.Endpoints;

/// <summary>
/// <c>/admin/routes</c>: route policies in force (stored ones first, then configured ones), with learned output caps and
/// deployments in cooldown; <c>PUT</c> / <c>DELETE</c> change the stored routes and take effect at once. Bodies are snake_case
/// (<c>{"task": "classification", "model": "gpt-4.1-nano", "max_tokens": 50, "priority": 0}</c>).
/// </summary>
public static class RoutesApi
{
    public sealed record RouteView(string Name, string Source, int? Priority, JsonNode Policy, int? LearnedCap);

    public sealed record RoutingView(IReadOnlyList<RouteView> Routes, IReadOnlyCollection<LearnedCap> LearnedCaps, IReadOnlyDictionary<string, DateTimeOffset> CoolingDeployments);

    public static IEndpointRouteBuilder MapRoutesApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/admin/routes").AddEndpointFilter(AdminApi.RequireAdminKey).ProducesAdminProblems().WithTags("routes");
        group.MapGet("", async (RouteTable table, IRouteStore store, OutputCapLearner caps, DeploymentHealth health, CancellationToken ct) =>
        {
            var stored = (await store.ListRoutesAsync(ct)).ToDictionary(r => r.Name, StringComparer.Ordinal);
            var views = table.Current.Routes.Select(r => new RouteView(r.Name, table.StoredNames.Contains(r.Name) ? "stored" : "configuration",
                stored.TryGetValue(r.Name, out var s) ? s.Priority : null, JsonSerializer.SerializeToNode(r, StoredRoute.Json)!,
                r.LearnMaxTokens ? caps.CapFor(r) : null)).ToArray();
            return TypedResults.Ok(new RoutingView(views, caps.Caps, health.Cooling()));
        }).WithSummary("Route policies in force (stored first, then configured), learned output caps, deployments in cooldown");
        group.MapPut("/{name}", PutAsync)
            .Accepts<RoutePolicy>("application/json")
            .WithSummary("Create or replace a stored route")
            .WithDescription("The route as JSON: snake_case (or PascalCase as in appsettings.json), plus an optional integer 'priority' (lower is tried first). An unknown field is a 400 naming it.")
            .ProducesProblem(StatusCodes.Status400BadRequest);
        group.MapDelete("/{name}", async Task<Results<NoContent, ProblemHttpResult>> (string name, IRouteStore store, RouteLoader loader, CancellationToken ct) =>
        {
            if (!await store.DeleteRouteAsync(name, ct)) return TypedResults.Problem(statusCode: 404, title: "No such route", detail: $"No stored route is named '{name}' (routes from configuration are changed in configuration).");
            await loader.ReloadAsync(ct);
            return TypedResults.NoContent();
        }).WithSummary("Delete a stored route");
        return app;
    }

    private static async Task<Results<Ok<RouteView>, ProblemHttpResult>> PutAsync(string name, HttpRequest request, IRouteStore store, RouteLoader loader, CancellationToken ct)
    {
        RoutePolicy policy;
        int priority;
        try
        {
            var body = await JsonNode.ParseAsync(request.Body, cancellationToken: ct) as JsonObject
                ?? throw new JsonException("the body must be a JSON object");
            priority = body["priority"] is JsonValue p ? p.GetValue<int>() : 0;
            body.Remove("priority");
            body.Remove("name");
            policy = StoredRoute.Parse(body);
            policy.Name = name;
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException)
        {
            return TypedResults.Problem(statusCode: 400, title: "Bad route", detail: $"Route '{name}': {e.Message}. Fields (snake_case, or PascalCase as in appsettings.json): task, feature, team, key_id, requested_model, min_input_tokens, max_input_tokens, model, ladder, strong_share, confidence_margin, fallbacks, max_tokens, learn_max_tokens, max_truncation_rate, stop, document_compression, compaction (an object: strategy, keep_turns, trigger_tokens, min_pruned_tokens, cache_aware, expected_remaining_turns), priority.");
        }
        try
        {
            loader.Validate(policy);
        }
        catch (InvalidOperationException e)
        {
            return TypedResults.Problem(statusCode: 400, title: "Bad route", detail: e.Message);
        }
        await store.UpsertRouteAsync(new StoredRoute(name, priority, policy), ct);
        await loader.ReloadAsync(ct);
        return TypedResults.Ok(new RouteView(name, "stored", priority, JsonSerializer.SerializeToNode(policy, StoredRoute.Json)!, null));
    }
}
