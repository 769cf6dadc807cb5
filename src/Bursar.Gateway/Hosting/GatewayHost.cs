using Bursar.Hosting;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;
using Bursar.Core.Budgets;
using Bursar.Core.Caching;
using Bursar.Core.Limits;
using Bursar.Core.Runs;
using Bursar.Core.Admission;
using Bursar.Core.Attribution;
using Bursar.Core.Caching.Semantic;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Dashboard;
using Bursar.Gateway.Endpoints;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Simulator;
using Bursar.Providers.Upstream;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Bursar.Gateway.Hosting;

/// <summary>Builds the Bursar gateway: used by <c>bursar serve</c>, <c>bursar demo</c>, the tests and the benchmarks.</summary>
public static partial class GatewayHost
{
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Logging.AddFilter("System.Net.Http.HttpClient", LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null; // the gateway enforces its own limit with a provider-shaped 413
            k.AddServerHeader = false;
        });
        configure?.Invoke(builder);
        AddBursarGateway(builder.Services, builder.Configuration);
        var app = builder.Build();
        app.MapBursarGateway();
        return app;
    }

    public static IServiceCollection AddBursarGateway(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddBursarCore(configuration);
        services.AddOptions<ProvidersOptions>().Bind(configuration.GetSection(ProvidersOptions.Section))
            .Validate(o => { ProvidersOptions.WithDefaults(o); return true; }).ValidateOnStart();
        services.AddSingleton(sp => ProvidersOptions.WithDefaults(sp.GetRequiredService<IOptions<ProvidersOptions>>().Value));
        services.AddHostedService<LargeBodyMemoryTrim>();
        services.AddSingleton(sp => new UpstreamRegistry(sp.GetRequiredService<ProvidersOptions>(), sp.GetRequiredService<ProviderSimulator>()));
        services.AddSingleton<UpstreamClient>();
        services.AddSingleton<KeyAuthenticator>();
        services.AddSingleton<AdminAuth>();
        services.AddSingleton<Bursar.Gateway.Routing.DeploymentHealth>();
        services.AddSingleton<Bursar.Gateway.Routing.LlmClassifier>();
        // the lever pipeline with the gateway's provider call as its last step
        services.AddSingleton<IServedModels, Bursar.Gateway.Routing.DeploymentModels>();
        services.AddSingleton<IDifficultyClassifier>(sp => sp.GetRequiredService<Bursar.Gateway.Routing.LlmClassifier>());
        services.AddSingleton<Bursar.Core.Context.IConversationSummarizer, Bursar.Gateway.Context.LlmSummarizer>();
        services.AddSingleton<UpstreamCall>();
        services.AddSingleton(sp => new LeverPipeline(sp.GetServices<ILeverStage>(), sp.GetRequiredService<UpstreamCall>(), sp.GetRequiredService<CallMeter>(), sp.GetRequiredService<AdmissionControl>()));
        services.AddSingleton<ProxyPipeline>();
        services.AddMetrics();
        // OpenTelemetry: Prometheus text at /metrics always; OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set
        var otel = services.AddOpenTelemetry()
            .WithMetrics(m => m.AddMeter(CallMeter.MeterName).AddPrometheusExporter())
            .WithTracing(t => t.AddSource(CallMeter.MeterName));
        if (!string.IsNullOrEmpty(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"])) otel.UseOtlpExporter();
        services.AddProblemDetails();
        services.AddBursarOpenApi(); // the admin API's document at /openapi/v1.json
        // binding failures throw, so the admin APIs answer them with problem details naming the field (AdminBadRequest)
        services.Configure<Microsoft.AspNetCore.Routing.RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter(System.Text.Json.JsonNamingPolicy.SnakeCaseLower));
        });
        services.AddHealthChecks()
            .AddCheck("live", () => HealthCheckResult.Healthy(), tags: ["live"])
            .AddCheck<StoreHealthCheck>("store", tags: ["ready"]);
        return services;
    }

    public static WebApplication MapBursarGateway(this WebApplication app)
    {
        app.UseAdminBadRequestProblems();
        app.MapChatCompletionsApi();
        app.MapMessagesApi();
        app.MapModelsApi();
        app.MapHealthApi();
        app.MapAdminApi();
        app.MapReportsApi();
        app.MapRoutesApi();
        app.MapOpenApiDocumentApi();
        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapDashboard();
        return app;
    }
}

internal sealed class StoreHealthCheck(ILedgerStore store, LedgerWriter writer) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            var n = await store.CountAsync(cancellationToken).ConfigureAwait(false);
            var data = new Dictionary<string, object> { ["ledger_records"] = n, ["ledger_pending"] = writer.Pending, ["ledger_store_failures"] = writer.StoreFailures };
            return HealthCheckResult.Healthy("ledger store reachable", data);
        }
        catch (Exception e)
        {
            return HealthCheckResult.Unhealthy("ledger store unreachable; records are spooled to disk", e);
        }
    }
}
