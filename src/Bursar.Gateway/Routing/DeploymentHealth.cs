using System.Collections.Concurrent;

namespace Bursar.Gateway.Routing;

/// <summary>Per-deployment cooldowns: a deployment that failed (429, 5xx, 529, timeout) is tried last by fallback chains until its cooldown ends.</summary>
public sealed class DeploymentHealth(TimeProvider time)
{
    private readonly ConcurrentDictionary<string, DateTimeOffset> _until = new(StringComparer.Ordinal);

    public void Failed(string deployment, TimeSpan cooldown) => _until[deployment] = time.GetUtcNow() + cooldown;

    public bool IsCooling(string deployment) => _until.TryGetValue(deployment, out var until) && until > time.GetUtcNow();

    /// <summary>Deployments cooling down now, with when they are tried first again.</summary>
    public IReadOnlyDictionary<string, DateTimeOffset> Cooling() =>
        _until.Where(kv => kv.Value > time.GetUtcNow()).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
}
