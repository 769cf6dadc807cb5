# Bursar gateway image: multi-stage (SDK to build, ASP.NET runtime to run), non-root, data in /data.
#   docker build -t bursar .
#   docker run -p 8080:8080 -v bursar-data:/data bursar
# Configuration comes from the environment (Bursar__Store, Bursar__Postgres__ConnectionString, Bursar__Redis__Configuration,
# Bursar__AdminKey, provider keys as Bursar__Providers__Deployments__0__ApiKey, ...); see README "Configuration".
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY . .
RUN dotnet publish src/Bursar.Cli -c Release -o /app --no-self-contained

FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS run
WORKDIR /app
COPY --from=build /app .
RUN mkdir -p /data && chown -R app:app /data
USER app
# a 16 MB gen0 budget (settable only from the environment): ~25 MB less RSS with 512 streams (bench/RESULTS.md, issue 18)
ENV BURSAR_DATA_DIR=/data \
    DOTNET_gcServer=0 \
    DOTNET_GCgen0size=0x1000000
# orchestrators probe GET /health/live and /health/ready (the image has no curl)
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["dotnet", "bursar.dll"]
CMD ["serve", "--urls", "http://0.0.0.0:8080"]
