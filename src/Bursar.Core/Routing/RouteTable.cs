using System.Text.Json;

namespace Bursar.Core.Routing;

/// <summary>Route policies kept in the store (the admin API and <c>bursar routes</c>), beside those in configuration.</summary>
public interface IRouteStore
{
    Task<IReadOnlyList<StoredRoute>> ListRoutesAsync(CancellationToken cancellationToken);
    Task UpsertRouteAsync(StoredRoute route, CancellationToken cancellationToken);
    Task<bool> DeleteRouteAsync(string name, CancellationToken cancellationToken);
}

/// <summary>A stored route: its policy as JSON, and its priority among stored routes (lower first).</summary>
public sealed record StoredRoute(string Name, int Priority, RoutePolicy Policy)
{
    /// <summary>Routes travel and are stored in snake_case (<c>max_tokens</c>, <c>strong_share</c>), as the admin API speaks.</summary>
    public static readonly JsonSerializerOptions Json = new() { PropertyNameCaseInsensitive = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };
    public string ToJson() => JsonSerializer.Serialize(Policy, Json);

    /// <summary>What callers send (the CLI and the admin API): an unknown field is an error naming it, not a route that silently does nothing.</summary>
    private static readonly JsonSerializerOptions Strict = new(Json) { UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Disallow };

    public static RoutePolicy Parse(string json) =>
        Parse(System.Text.Json.Nodes.JsonNode.Parse(json) as System.Text.Json.Nodes.JsonObject ?? throw new JsonException("a route must be a JSON object"));

    /// <summary>
    /// A route from a caller: fields in snake_case (<c>max_tokens</c>) or PascalCase as in appsettings.json
    /// (<c>MaxTokens</c>); a field the route does not have is an error that names it.
    /// </summary>
    public static RoutePolicy Parse(System.Text.Json.Nodes.JsonObject body)
    {
        var normalized = new System.Text.Json.Nodes.JsonObject();
        foreach (var (key, value) in body)
        {
            var snake = JsonNamingPolicy.SnakeCaseLower.ConvertName(key);
            if (normalized.ContainsKey(snake)) throw new JsonException($"the field '{key}' is given twice (as '{snake}')");
            // a nested policy (compaction) takes its fields in either case too
            normalized[snake] = value is System.Text.Json.Nodes.JsonObject nested ? Normalize(nested) : value?.DeepClone();
        }
        try
        {
            return normalized.Deserialize<RoutePolicy>(Strict) ?? throw new JsonException("empty route");
        }
        catch (JsonException e) when (e.Message.Contains("could not be mapped", StringComparison.Ordinal) && e.Path is { } path)
        {
            throw new JsonException($"unknown field '{path.TrimStart('$', '.')}'", e);
        }
    }

    private static System.Text.Json.Nodes.JsonObject Normalize(System.Text.Json.Nodes.JsonObject body)
    {
        var normalized = new System.Text.Json.Nodes.JsonObject();
        foreach (var (key, value) in body)
        {
            var snake = JsonNamingPolicy.SnakeCaseLower.ConvertName(key);
            if (normalized.ContainsKey(snake)) throw new JsonException($"the field '{key}' is given twice (as '{snake}')");
            normalized[snake] = value?.DeepClone();
        }
        return normalized;
    }
}

/// <summary>
/// The routes in force: stored routes first (by priority, then name), then the configured ones; the first match wins.
/// Swapped atomically when the store changes; readers take <see cref="Current"/> once per request.
/// </summary>
public sealed class RouteTable
{
    private readonly RoutingOptions _configured;
    private volatile RoutingOptions _current;

    public RouteTable(RoutingOptions configured)
    {
        _configured = configured;
        _current = configured;
    }

    public RoutingOptions Configured => _configured;
    public RoutingOptions Current => _current;
    public IReadOnlySet<string> StoredNames { get; private set; } = new HashSet<string>();

    /// <summary>Installs the stored routes (validated by the caller) in front of the configured ones.</summary>
    public void Install(IEnumerable<StoredRoute> stored)
    {
        var list = stored.OrderBy(s => s.Priority).ThenBy(s => s.Name, StringComparer.Ordinal).ToArray();
        var names = list.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        _current = new RoutingOptions
        {
            Routes = [.. list.Select(s => s.Policy), .. _configured.Routes.Where(r => !names.Contains(r.Name))],
            RouterModel = _configured.RouterModel,
            Cooldown = _configured.Cooldown,
        };
        StoredNames = names;
    }
}
