using Bursar.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

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
        services.AddBursarCore(configuration ?? new ConfigurationBuilder().Build());
        services.AddSingleton<BursarRuntime>();
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
