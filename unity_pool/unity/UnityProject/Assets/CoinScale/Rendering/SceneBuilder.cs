// Builds a scene spec in Unity and renders it to PNG bytes: prefabs from the catalog at the
// spec's positions, materials for colour and texture, a directional light for intensity,
// direction and colour temperature, an orthographic camera for zoom and offset, a RenderTexture
// read back with Texture2D.ReadPixels and encoded with Texture2D.EncodeToPNG.
//
// Geometry (docs/render-protocol.md, section 1): one world unit is the image's shorter side, the
// scene lies in the z = 0 plane with x right and y up, the camera looks along +z. The main object
// is nearest the camera and each later object of objects[1:] nearer than the one before, so the
// draw order is the protocol's. The backdrop is a quad parented to the camera at its far end,
// sized to the view, so zoom and offset move the objects and never the background.
//
// Call only from Unity's main thread. Targets the Built-in Render Pipeline (see docs/unity.md
// for URP/HDRP).
using System;
using System.Collections.Generic;
using CoinScale.Protocol;
using UnityEngine;
using UnityEngine.Rendering;

namespace CoinScale.Rendering
{
    public sealed class SceneBuilder : IDisposable
    {
        /// <summary>World units between object layers along the view axis (objects are at most 1.5 across).</summary>
        private const float LayerDepth = 4f;
        /// <summary>Distance from the camera to the scene plane.</summary>
        private const float CameraDistance = 10f;
        /// <summary>Tilt of the light away from the view axis at lighting.directional = 1, degrees.</summary>
        private const float MaxTilt = 60f;
        /// <summary>Share of the light that is ambient (flat), so faces turned away are not black.</summary>
        private const float AmbientShare = 0.35f;
        /// <summary>MSAA samples: edge pixels carry their covered fraction (approximately).</summary>
        private const int Msaa = 8;

        private readonly CoinScaleCatalog catalog;
        private readonly GameObject root;
        private readonly Camera view;
        private readonly Light sun;
        private readonly Transform backdrop;
        private readonly MeshRenderer backdropRenderer;
        private readonly Material plainBackdrop;
        private readonly Mesh quadMesh;
        private readonly Dictionary<string, Material> materials = new Dictionary<string, Material>();
        private readonly List<GameObject> built = new List<GameObject>();
        private readonly MaterialPropertyBlock block = new MaterialPropertyBlock();
        private RenderTexture target;
        private Texture2D readback;

        public SceneBuilder(CoinScaleCatalog catalog)
        {
            if (catalog == null) throw new ArgumentNullException("catalog");
            this.catalog = catalog;
            GraphicsSettings.lightsUseLinearIntensity = true;
            GraphicsSettings.lightsUseColorTemperature = true;
            RenderSettings.ambientMode = AmbientMode.Flat;
            RenderSettings.fog = false;
            RenderSettings.skybox = null;

            root = new GameObject("CoinScaleScene");
            UnityEngine.Object.DontDestroyOnLoad(root);

            view = new GameObject("CoinScaleCamera").AddComponent<Camera>();
            view.transform.SetParent(root.transform, false);
            view.enabled = false; // rendered on demand
            view.orthographic = true;
            view.clearFlags = CameraClearFlags.SolidColor;
            view.backgroundColor = Color.black;
            view.nearClipPlane = 0.1f;
            view.allowHDR = false;
            view.allowMSAA = true;

            sun = new GameObject("CoinScaleLight").AddComponent<Light>();
            sun.transform.SetParent(root.transform, false);
            sun.type = LightType.Directional;
            sun.shadows = LightShadows.None; // a 2-D composition: no shadows cast across layers
            sun.useColorTemperature = true;

            var quad = new GameObject("CoinScaleBackdrop");
            quadMesh = QuadMesh();
            quad.AddComponent<MeshFilter>().sharedMesh = quadMesh;
            backdrop = quad.transform;
            backdrop.SetParent(view.transform, false);
            backdropRenderer = quad.AddComponent<MeshRenderer>();
            backdropRenderer.shadowCastingMode = ShadowCastingMode.Off;
            backdropRenderer.receiveShadows = false;

            plainBackdrop = NewMaterial(catalog.objectMaterial, "CoinScalePlain");
            plainBackdrop.color = new Color32(128, 128, 128, 255); // the procedural backend's mid grey
            plainBackdrop.mainTexture = null;
        }

        /// <summary>Render a validated spec to PNG bytes (RGB, spec.Width x spec.Height).</summary>
        public byte[] Render(SceneSpec spec)
        {
            try
            {
                Build(spec);
                var texture = Target(spec.Width, spec.Height);
                view.targetTexture = texture;
                view.aspect = spec.Width / (float)spec.Height;
                view.Render();
                var previous = RenderTexture.active;
                RenderTexture.active = texture;
                readback.ReadPixels(new Rect(0, 0, spec.Width, spec.Height), 0, 0, false);
                RenderTexture.active = previous;
                return readback.EncodeToPNG();
            }
            finally
            {
                view.targetTexture = null;
                Clear();
            }
        }

        public void Dispose()
        {
            Clear();
            foreach (var material in materials.Values) UnityEngine.Object.Destroy(material);
            materials.Clear();
            UnityEngine.Object.Destroy(plainBackdrop);
            UnityEngine.Object.Destroy(quadMesh);
            ReleaseTarget();
            UnityEngine.Object.Destroy(root);
        }

        private void Build(SceneSpec spec)
        {
            var shorter = Math.Min(spec.Width, spec.Height);
            var viewWidth = spec.Width / (float)shorter;   // world units at zoom 1
            var viewHeight = spec.Height / (float)shorter;
            var zoom = (float)spec.Camera.Zoom;

            // camera: looks at the scene point (0.5 + offset_x, 0.5 + offset_y), magnified by zoom
            view.orthographicSize = viewHeight / 2f / zoom;
            view.transform.localPosition = new Vector3(
                (float)spec.Camera.OffsetX * viewWidth, -(float)spec.Camera.OffsetY * viewHeight, -CameraDistance);
            view.transform.localRotation = Quaternion.identity;
            var far = CameraDistance + LayerDepth * (spec.Objects.Count + 1);
            view.farClipPlane = far + 1f;

            // backdrop: fills the view at the far end, whatever the zoom and offset
            backdrop.localPosition = new Vector3(0f, 0f, far);
            backdrop.localRotation = Quaternion.identity;
            backdrop.localScale = new Vector3(viewWidth / zoom, viewHeight / zoom, 1f);
            var backdropMaterial = catalog.Backdrop(spec.Background);
            if (backdropMaterial == null)
            {
                if (spec.Background != "plain") throw MissingAsset("background", spec.Background, "backgrounds");
                backdropMaterial = plainBackdrop;
            }
            backdropRenderer.sharedMaterial = backdropMaterial;

            ApplyLighting(spec.Lighting);

            // objects: objects[0] nearest the camera; objects[1:] drawn in order, later on top
            var n = spec.Objects.Count;
            for (var i = 0; i < n; i++)
            {
                var obj = spec.Objects[i];
                var prefab = catalog.Prefab(obj.Shape);
                if (prefab == null) throw MissingAsset("shape", obj.Shape, "shapes");
                var depth = i == 0 ? 0f : (n - i) * LayerDepth;
                var instance = UnityEngine.Object.Instantiate(prefab, root.transform, false);
                built.Add(instance);
                var t = instance.transform;
                t.localPosition = new Vector3(
                    ((float)obj.X - 0.5f) * viewWidth, -((float)obj.Y - 0.5f) * viewHeight, depth);
                t.localRotation = Quaternion.Euler(0f, 0f, (float)obj.Rotation) * prefab.transform.localRotation;
                t.localScale = prefab.transform.localScale * (float)obj.Size;
                Paint(instance, obj, spec.Seed, i);
            }
        }

        private void Paint(GameObject instance, SceneObjectSpec obj, long seed, int index)
        {
            var material = ObjectMaterial(obj.Color, obj.Texture);
            // an independent random stream per object (seed, 1 + index), as the protocol asks
            var random = new System.Random(unchecked((int)(seed ^ (seed >> 32)) * 7919 + 1 + index));
            var offset = new Vector4(1f, 1f, (float)random.NextDouble(), (float)random.NextDouble());
            foreach (var renderer in instance.GetComponentsInChildren<Renderer>())
            {
                renderer.sharedMaterial = material;
                renderer.shadowCastingMode = ShadowCastingMode.Off;
                block.Clear();
                if (obj.Texture != "solid")
                {
                    block.SetVector("_MainTex_ST", offset);  // Built-in pipeline name
                    block.SetVector("_BaseMap_ST", offset);  // URP name
                }
                renderer.SetPropertyBlock(block);
            }
        }

        private Material ObjectMaterial(string color, string texture)
        {
            var key = color + "/" + texture;
            Material material;
            if (materials.TryGetValue(key, out material)) return material;
            if (catalog.objectMaterial == null) throw MissingAsset("object material", "objectMaterial", "objectMaterial");
            var map = catalog.Map(texture);
            if (map == null && texture != "solid") throw MissingAsset("texture", texture, "textures");
            material = NewMaterial(catalog.objectMaterial, "CoinScale " + key);
            var rgb = Vocab.Rgb(color);
            material.color = new Color32(rgb[0], rgb[1], rgb[2], 255); // sRGB; Unity linearises in Linear space
            material.mainTexture = map;
            materials[key] = material;
            return material;
        }

        private void ApplyLighting(LightingSpec lighting)
        {
            var d = (float)lighting.Direction * Mathf.Deg2Rad;
            var tilt = (float)lighting.Directional * MaxTilt * Mathf.Deg2Rad;
            // towards the light: in the screen plane along `direction`, and back towards the camera
            var toLight = new Vector3(Mathf.Cos(d) * Mathf.Sin(tilt), Mathf.Sin(d) * Mathf.Sin(tilt), -Mathf.Cos(tilt));
            sun.transform.rotation = Quaternion.LookRotation(-toLight);
            var intensity = (float)lighting.Intensity;
            sun.intensity = intensity * (1f - AmbientShare);
            sun.colorTemperature = (float)lighting.Temperature;
            sun.color = Color.white;
            var tint = Mathf.CorrelatedColorTemperatureToRGB((float)lighting.Temperature);
            var neutral = Mathf.CorrelatedColorTemperatureToRGB(6500f);
            RenderSettings.ambientLight = new Color(
                tint.r / neutral.r, tint.g / neutral.g, tint.b / neutral.b) * (intensity * AmbientShare);
        }

        private RenderTexture Target(int width, int height)
        {
            if (target != null && target.width == width && target.height == height) return target;
            ReleaseTarget();
            target = new RenderTexture(width, height, 24, RenderTextureFormat.ARGB32, RenderTextureReadWrite.sRGB)
            {
                antiAliasing = Msaa,
                name = "CoinScaleTarget",
            };
            target.Create();
            readback = new Texture2D(width, height, TextureFormat.RGB24, false, false);
            return target;
        }

        private void ReleaseTarget()
        {
            if (target != null)
            {
                target.Release();
                UnityEngine.Object.Destroy(target);
                target = null;
            }
            if (readback != null)
            {
                UnityEngine.Object.Destroy(readback);
                readback = null;
            }
        }

        private void Clear()
        {
            foreach (var instance in built) UnityEngine.Object.DestroyImmediate(instance);
            built.Clear();
        }

        /// <summary>A unit quad in the xy plane facing -z (the camera), uv 0..1 left-to-right, bottom-to-top.</summary>
        private static Mesh QuadMesh()
        {
            var mesh = new Mesh { name = "CoinScaleQuad" };
            mesh.vertices = new[]
            {
                new Vector3(-0.5f, -0.5f, 0f), new Vector3(0.5f, -0.5f, 0f),
                new Vector3(-0.5f, 0.5f, 0f), new Vector3(0.5f, 0.5f, 0f),
            };
            mesh.uv = new[] { new Vector2(0f, 0f), new Vector2(1f, 0f), new Vector2(0f, 1f), new Vector2(1f, 1f) };
            mesh.triangles = new[] { 0, 2, 1, 2, 3, 1 };
            mesh.normals = new[] { Vector3.back, Vector3.back, Vector3.back, Vector3.back };
            mesh.RecalculateBounds();
            return mesh;
        }

        private static Material NewMaterial(Material template, string name)
        {
            var material = template != null ? new Material(template) : new Material(Shader.Find("Standard"));
            material.name = name;
            return material;
        }

        private static InvalidOperationException MissingAsset(string kind, string name, string field)
        {
            return new InvalidOperationException(
                "the CoinScale catalog has no " + kind + " for '" + name + "'. Fix: open the project, select " +
                "Assets/CoinScale/Resources/CoinScaleCatalog.asset and fill `" + field + "`, then rebuild the player " +
                "(docs/unity.md).");
        }
    }
}
