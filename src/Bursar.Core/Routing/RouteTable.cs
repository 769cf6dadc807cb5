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
    public static RoutePolicy Parse(string json) => JsonSerializer.Deserialize<RoutePolicy>(json, Json) ?? throw new JsonException("empty route");
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
