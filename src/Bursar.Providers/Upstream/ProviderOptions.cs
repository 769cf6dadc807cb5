using Bursar.Providers.Dialects;

namespace Bursar.Providers.Upstream;

/// <summary>One upstream deployment: a provider (or OpenAI-compatible server) with its base URL, key and the models it serves.</summary>
public sealed class DeploymentOptions
{
    /// <summary>
    /// Wire format the upstream speaks: <c>openai</c> or <c>anthropic</c>. When unset, a deployment named
    /// <c>anthropic</c> speaks anthropic (overriding only the built-in deployment's BaseUrl keeps its dialect) and
    /// every other one openai.
    /// </summary>
    public string? Dialect { get; set; }

    /// <summary>Base URL as the provider's SDK takes it: https://api.anthropic.com (calls go to {base}/v1/messages), https://api.openai.com/v1 (calls go to {base}/chat/completions).</summary>
    public string? BaseUrl { get; set; }

    /// <summary>The provider key. When empty, calls for this deployment go to the built-in Simulator (if allowed).</summary>
    public string? ApiKey { get; set; }

    /// <summary>Model ids or prefix patterns ending in '*' that this deployment serves. First matching deployment wins.</summary>
    public List<string> Models { get; set; } = [];

    /// <summary>Retries on 408, 429, 5xx and 529 before the response starts, honouring retry-after. Default 2.</summary>
    public int MaxRetries { get; set; } = 2;

    /// <summary>Whole-call timeout. Default 10 minutes (long generations stream for minutes).</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Extra headers sent upstream (e.g. OpenAI-Organization).</summary>
    public Dictionary<string, string> Headers { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    public Dialect ParsedDialect => Dialect is { } d && d.Equals("anthropic", StringComparison.OrdinalIgnoreCase) ? Dialects.Dialect.Anthropic : Dialects.Dialect.OpenAI;

    /// <summary>The dialect a deployment of this name speaks when its configuration does not say.</summary>
    public static string DefaultDialect(string deploymentName) =>
        deploymentName.Equals("anthropic", StringComparison.OrdinalIgnoreCase) ? "anthropic" : "openai";
}

/// <summary>The <c>Bursar:Providers</c> section: named deployments plus Simulator fallback.</summary>
public sealed class ProvidersOptions
{
    public const string Section = "Bursar:Providers";

    public Dictionary<string, DeploymentOptions> Deployments { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Serve a deployment that has no API key from the built-in Simulator. Default true (offline first).</summary>
    public bool UseSimulatorWhenNoKey { get; set; } = true;

    /// <summary>Longest wait honoured from a retry-after header. Default 20 s.</summary>
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>First backoff delay without retry-after; doubles each retry. Default 250 ms.</summary>
    public TimeSpan BaseRetryDelay { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>The defaults every Bursar has: Anthropic for claude-*, OpenAI for gpt-*, o-series and chatgpt-*.</summary>
    public static ProvidersOptions WithDefaults(ProvidersOptions? configured)
    {
        var o = configured ?? new ProvidersOptions();
        var result = new ProvidersOptions
        {
            UseSimulatorWhenNoKey = o.UseSimulatorWhenNoKey,
            MaxRetryDelay = o.MaxRetryDelay,
            BaseRetryDelay = o.BaseRetryDelay,
            Deployments = new(o.Deployments, StringComparer.OrdinalIgnoreCase),
        };
        foreach (var (name, builtIn) in BuiltIn())
        {
            // a configured deployment of a built-in name overrides only the fields it sets (Bursar:Providers:Deployments:anthropic:BaseUrl=...
            // alone keeps the anthropic dialect and the claude-* models)
            if (!result.Deployments.TryGetValue(name, out var d))
            {
                result.Deployments[name] = builtIn;
                continue;
            }
            d.Dialect ??= builtIn.Dialect;
            if (d.Models.Count == 0) d.Models.AddRange(builtIn.Models);
        }
        foreach (var (name, d) in result.Deployments)
        {
            d.Dialect ??= DeploymentOptions.DefaultDialect(name);
            if (!d.Dialect.Equals("openai", StringComparison.OrdinalIgnoreCase) && !d.Dialect.Equals("anthropic", StringComparison.OrdinalIgnoreCase))
                throw new InvalidOperationException($"Deployment '{name}' has an unknown Dialect '{d.Dialect}'; set {Section}:Deployments:{name}:Dialect to openai or anthropic.");
            if (d.Models.Count == 0) throw new InvalidOperationException($"Deployment '{name}' lists no models; set {Section}:Deployments:{name}:Models.");
            if (d.BaseUrl is not null && !Uri.TryCreate(d.BaseUrl, UriKind.Absolute, out _))
                throw new InvalidOperationException($"Deployment '{name}' has an invalid BaseUrl '{d.BaseUrl}'.");
            if (d.MaxRetries is < 0 or > 10) throw new InvalidOperationException($"Deployment '{name}' MaxRetries must be 0-10, not {d.MaxRetries}.");
            d.BaseUrl ??= d.ParsedDialect == Dialect.Anthropic ? "https://api.anthropic.com" : "https://api.openai.com/v1";
        }
        return result;
    }

    /// <summary>The built-in deployments: <c>anthropic</c> (claude-*) and <c>openai</c> (gpt-*, o-series, chatgpt-*, and OpenAI's text-embedding-* models), both served by the Simulator until they get an ApiKey.</summary>
    public static IReadOnlyList<(string Name, DeploymentOptions Options)> BuiltIn() =>
    [
        ("anthropic", new DeploymentOptions { Dialect = "anthropic", Models = ["claude-*"] }),
        ("openai", new DeploymentOptions { Dialect = "openai", Models = ["gpt-*", "o1*", "o3*", "o4*", "chatgpt-*"] }),
    ];
}
