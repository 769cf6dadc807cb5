using Bursar.Core.Batch;
using Bursar.Hosting;
using Bursar.Providers.Simulator;
using Bursar.Providers.Upstream;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Bursar.Extensions.AI;

public static class BursarServiceCollectionExtensions
{
    /// <summary>
    /// Registers Bursar's stores and levers for <see cref="BursarChatClientBuilderExtensions.UseBursar"/>: the ledger
    /// (the SQLite file in <c>Bursar:DataDirectory</c>, default <c>.bursar</c>, shared with the gateway and the
    /// <c>bursar</c> command), prices, budgets, rate limits, run caps, routes and the response caches, bound to the
    /// <c>Bursar</c> section of <paramref name="configuration"/> (the same keys as the gateway's appsettings).
    /// </summary>
    public static IServiceCollection AddBursar(this IServiceCollection services, IConfiguration? configuration = null)
    {
        services.AddLogging();
        configuration ??= new ConfigurationBuilder().Build();
        services.AddBursarCore(configuration);
        services.AddSingleton<BursarRuntime>();
        // the batch lever: a call with ChatOptions.AllowBackgroundResponses is deferred by the same stage as the gateway's x-bursar-defer,
        // queued in the shared job store for the deployment serving its model (Bursar:Providers) and flushed by the gateway's flusher
        services.AddOptions<DeferralOptions>().Bind(configuration.GetSection(DeferralOptions.Section)).Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<DeferralOptions>>().Value);
        services.AddOptions<ProvidersOptions>().Bind(configuration.GetSection(ProvidersOptions.Section));
        services.TryAddSingleton(sp => new UpstreamRegistry(ProvidersOptions.WithDefaults(sp.GetRequiredService<IOptions<ProvidersOptions>>().Value), sp.GetRequiredService<ProviderSimulator>()));
        services.TryAddSingleton<IJobStore>(sp => (IJobStore)sp.GetRequiredService<Bursar.Core.Storage.IBursarStore>());
        services.AddSingleton<ChatJobQueue>();
        services.AddSingleton<IJobQueue>(sp => sp.GetRequiredService<ChatJobQueue>());
        new Bursar.Core.Pipeline.LeverPipelineBuilder(services).Use<DeferralStage>();
        services.AddSingleton<Bursar.Core.Routing.IDifficultyClassifier, ChatDifficultyClassifier>(); // replaces the core's null object
        return services;
    }

    /// <summary>Like <see cref="AddBursar(IServiceCollection, IConfiguration?)"/>, with settings given as configuration keys, e.g. <c>["Bursar:DataDirectory"] = "/var/lib/bursar"</c>.</summary>
    public static IServiceCollection AddBursar(this IServiceCollection services, IDictionary<string, string?> settings) =>
        services.AddBursar(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
}

public static class BursarChatClientBuilderExtensions
{
    /// <summary>
    /// Adds Bursar's lever pipeline at this point of the chat client pipeline (it needs <c>services.AddBursar()</c>
    /// in the provider given to <see cref="ChatClientBuilder.Build(IServiceProvider?)"/>). Call it after
    /// <c>UseFunctionInvocation()</c> and after <c>UseDistributedCache()</c>, if you use them.
    /// </summary>
    public static ChatClientBuilder UseBursar(this ChatClientBuilder builder, Action<BursarChatClientOptions>? configure = null) =>
        builder.Use((inner, services) =>
        {
            var runtime = services.GetService(typeof(BursarRuntime)) as BursarRuntime
                ?? throw new InvalidOperationException("UseBursar() needs Bursar's services: call services.AddBursar() and pass the service provider to ChatClientBuilder.Build(services).");
            var options = new BursarChatClientOptions();
            configure?.Invoke(options);
            return new BursarChatClient(inner, runtime, options);
        });
}
