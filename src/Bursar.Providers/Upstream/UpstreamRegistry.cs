using System.Net;
using Bursar.Providers.Dialects;
using Bursar.Providers.Simulator;

namespace Bursar.Providers.Upstream;

/// <summary>A configured upstream: where calls for its models go, with which key, over which connection pool.</summary>
public sealed class UpstreamDeployment
{
    internal UpstreamDeployment(string name, DeploymentOptions options, HttpMessageInvoker invoker, bool simulated)
    {
        Name = name;
        Options = options;
        Dialect = options.ParsedDialect;
        BaseUri = new Uri(options.BaseUrl!.TrimEnd('/') + "/");
        Invoker = invoker;
        Simulated = simulated;
        _exact = options.Models.Where(m => !m.EndsWith('*')).ToHashSet(StringComparer.OrdinalIgnoreCase);
        _prefixes = options.Models.Where(m => m.EndsWith('*')).Select(m => m[..^1]).ToArray();
        // the built-in OpenAI deployment (as long as it serves the gpt family) also serves OpenAI's embedding models
        _embeddings = name.Equals("openai", StringComparison.OrdinalIgnoreCase) && Dialect == Dialect.OpenAI && options.Models.Contains("gpt-*", StringComparer.Ordinal);
    }

    /// <summary>The prefix of OpenAI's embedding models, which the built-in <c>openai</c> deployment serves besides the models it lists.</summary>
    public const string EmbeddingModelPrefix = "text-embedding-";

    private readonly bool _embeddings;

    private readonly HashSet<string> _exact;
    private readonly string[] _prefixes;

    public string Name { get; }
    public Dialect Dialect { get; }
    public Uri BaseUri { get; }
    public DeploymentOptions Options { get; }
    public HttpMessageInvoker Invoker { get; }
    /// <summary>True when this deployment has no key and is served by the built-in Simulator.</summary>
    public bool Simulated { get; }
    public string ProviderName => Simulated ? Name + " (simulator)" : Name;

    public bool Serves(string model)
    {
        if (_exact.Contains(model)) return true;
        if (_embeddings && model.StartsWith(EmbeddingModelPrefix, StringComparison.OrdinalIgnoreCase)) return true;
        foreach (var p in _prefixes)
            if (model.StartsWith(p, StringComparison.OrdinalIgnoreCase)) return true;
        return false;
    }
}

/// <summary>Finds the deployment for a model. Immutable; built once from validated options.</summary>
public sealed class UpstreamRegistry : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    public UpstreamRegistry(ProvidersOptions options, ProviderSimulator simulator)
    {
        var opts = ProvidersOptions.WithDefaults(options);
        Options = opts;
        HttpMessageInvoker? simInvoker = null;
        var list = new List<UpstreamDeployment>();
        foreach (var (name, d) in opts.Deployments)
        {
            var simulated = string.IsNullOrEmpty(d.ApiKey);
            if (simulated && !opts.UseSimulatorWhenNoKey)
            {
                // a deployment without a key that may not fall back to the Simulator still exists: it answers 401 upstream
                simulated = false;
            }
            HttpMessageInvoker invoker;
            if (simulated)
            {
                invoker = simInvoker ??= new HttpMessageInvoker(new SimulatorHttpHandler(simulator), disposeHandler: true);
                simulator.AddModels(d.Models); // a model the deployment names exactly exists for the Simulator standing in for it
            }
            else
            {
                invoker = ProviderInvoker();
                _owned.Add(invoker);
            }
            list.Add(new UpstreamDeployment(name, d, invoker, simulated));
        }
        if (simInvoker is not null) _owned.Add(simInvoker);
        Deployments = list;
    }

    /// <summary>The connection pool of a provider deployment (one per deployment).</summary>
    private static HttpMessageInvoker ProviderInvoker() => new(new SocketsHttpHandler
    {
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1),
        AutomaticDecompression = DecompressionMethods.None,
        UseCookies = false,
        UseProxy = false,
        ConnectTimeout = TimeSpan.FromSeconds(15),
        MaxConnectionsPerServer = int.MaxValue,
    }, disposeHandler: true);

    private volatile UpstreamDeployment[] _rehearsals = [];
    private HttpMessageInvoker? _rehearsalInvoker;

    /// <summary>
    /// Opens the deployments the gateway's warm-up calls go to (<see cref="Rehearsal"/>): an upstream on this machine
    /// (the gateway's own warm-up Simulator) reached over a connection pool like a provider's, so the warm-up runs the
    /// same upstream code a provider call does; <paramref name="headers"/> go with every call. Not among
    /// <see cref="Deployments"/>: no caller's model resolves to them. Closed by <see cref="CloseRehearsals"/>.
    /// </summary>
    public void OpenRehearsals(Uri openAiBase, Uri anthropicBase, IReadOnlyDictionary<string, string> headers)
    {
        var invoker = _rehearsalInvoker = ProviderInvoker();
        UpstreamDeployment Make(string dialect, Uri baseUri) => new("warm-up", new DeploymentOptions
        {
            Dialect = dialect, BaseUrl = baseUri.ToString(), ApiKey = "warm-up", Models = ["*"], MaxRetries = 0, Timeout = TimeSpan.FromSeconds(10),
            Headers = new Dictionary<string, string>(headers, StringComparer.OrdinalIgnoreCase),
        }, invoker, simulated: false);
        _rehearsals = [Make("openai", openAiBase), Make("anthropic", anthropicBase)];
    }

    /// <summary>Closes what <see cref="OpenRehearsals"/> opened: a warm-up call after this finds no deployment.</summary>
    public void CloseRehearsals()
    {
        _rehearsals = [];
        Interlocked.Exchange(ref _rehearsalInvoker, null)?.Dispose();
    }

    /// <summary>The deployment a warm-up call of <paramref name="dialect"/> goes to while they are open (<see cref="OpenRehearsals"/>), else null.</summary>
    public UpstreamDeployment? Rehearsal(Dialect dialect)
    {
        foreach (var d in _rehearsals)
            if (d.Dialect == dialect) return d;
        return null;
    }

    public ProvidersOptions Options { get; }

    public IReadOnlyList<UpstreamDeployment> Deployments { get; }

    public UpstreamDeployment? Find(string model)
    {
        foreach (var d in Deployments)
            if (d.Serves(model)) return d;
        return null;
    }

    public void Dispose()
    {
        CloseRehearsals();
        foreach (var d in _owned) d.Dispose();
    }
}
